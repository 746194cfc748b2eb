from dictopt.cli import main

raise SystemExit(main())
