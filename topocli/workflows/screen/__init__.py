"""workflows/screen"""
