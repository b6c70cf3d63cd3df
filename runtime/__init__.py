"""ptqc.runtime"""
