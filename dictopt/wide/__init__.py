"""wide"""
