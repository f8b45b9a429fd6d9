"""The parts behind dataset_loader.py, the loader's front door."""
