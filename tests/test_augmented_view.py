"""`rcnn data check --show N --augmented` (issue 19): training pictures as the model sees them, after the
augmentation and the model's own resize, with their boxes."""

from __future__ import annotations

from PIL import Image

from rcnn_cli.commands import check


def test_augmented_pictures_are_resized_and_flipped_as_in_training(bccd_root, tmp_path, monkeypatch):
    import rcnn_cli.data.draw as draw_module

    drawn = []
    real = draw_module.draw_boxes

    def spy(image, boxes, captions, labels):
        drawn.append((image.shape, boxes.copy()))
        return real(image, boxes, captions, labels)

    monkeypatch.setattr(draw_module, "draw_boxes", spy)
    base = ["dataset=bccd", "model.min_size=320", "model.max_size=1000", "augment.color_jitter=0",
            "augment.scale=null"]
    for name, flip in (("plain", 0.0), ("flipped", 1.0)):
        code = check.run(check.CheckOptions([*base, f"augment.hflip={flip}"], show=2, out=tmp_path / name,
                                            augmented=True))
        assert code == 0
    pictures = sorted((tmp_path / "plain").glob("aug_*.png"))
    assert len(pictures) == 2 and Image.open(pictures[0]).size == (426, 320)        # 640x480 -> short side 320 (floor)
    (shape, plain), (_, flipped) = drawn[0], drawn[2]
    assert shape == (320, 426, 3)
    mirrored = plain.copy()
    mirrored[:, [0, 2]] = 426 - plain[:, [2, 0]]
    def rows(boxes):
        return sorted(map(tuple, boxes.round(0).tolist()))

    assert len(flipped) == len(plain) > 5
    assert max(abs(a - b) for ra, rb in zip(rows(mirrored), rows(flipped)) for a, b in zip(ra, rb)) <= 1.0
