"""workflows/localize"""
