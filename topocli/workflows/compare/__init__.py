"""workflows/compare"""
