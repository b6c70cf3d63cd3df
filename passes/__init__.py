"""ptqc.passes"""
