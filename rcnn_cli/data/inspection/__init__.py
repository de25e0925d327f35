"""Looking at data before training (``rcnn data check``): problems, duplicates and leakage, anchor fit."""
