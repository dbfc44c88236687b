"""human"""
