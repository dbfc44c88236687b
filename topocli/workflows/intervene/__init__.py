"""workflows/intervene"""
