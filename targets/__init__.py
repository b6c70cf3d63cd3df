"""ptqc.targets"""
