"""What CMSSW fixes and this project must match: the trackingNtuple's conventions
(`cmssw.ntuple`) and what CMSSW's track classifiers load (`cmssw.classifiers`).

These are facts, defined once here; the settings in config.py refer to them.
"""
