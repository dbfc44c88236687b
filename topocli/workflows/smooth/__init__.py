"""workflows/smooth"""
