"""``rcnn benchmark``: our detector against torchvision's with identical weights, same process."""
