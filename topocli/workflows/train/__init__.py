"""workflows/train"""
