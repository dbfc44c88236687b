"""workflows/info"""
