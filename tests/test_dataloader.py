import numpy as np
import pytest
from PIL import Image

from misc import imutils
from misc.data.dataset import ClassLabels, load_img_name_list
from misc.data.samples import ClassificationDataset, SegmentationDataset
from voc12.dataloader import VOCDataset


def test_segmentation_augmentations_keep_image_and_label_aligned(fake_voc):
    ids = load_img_name_list(fake_voc / "ImageSets/Segmentation/train.txt")
    ds = SegmentationDataset(ids, VOCDataset(fake_voc), "train",
                             fake_voc / "SegmentationClass", crop_size=56)
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            img, label = s["img"].numpy(), s["label"].numpy()
            assert img.shape == (3, 56, 56) and label.shape == (56, 56)
            red = img[0] * imutils.IMAGENET_STD[0] + imutils.IMAGENET_MEAN[0]
            inside = label != 255
            # outside the image: label 255 and the mean colour (normalised 0)
            assert np.all(img[:, ~inside] == 0)
            agree = ((red > 0.5) == (label == 1))[inside].mean()
            assert agree > 0.97, agree


def test_classification_sample_shapes_and_determinism(fake_voc):
    ids = load_img_name_list(fake_voc / "ImageSets/Segmentation/train.txt")
    ds = ClassificationDataset(ids, VOCDataset(fake_voc), "train", 64,
                               resize_long=(40, 80))
    a, b = ds[1], ds[1]
    assert a["img"].shape == (3, 64, 64) and a["label"].tolist() == [1, 0, 0]
    assert np.array_equal(a["img"], b["img"])  # per-sample RNG: same epoch, same sample
    ds.set_epoch(1)
    assert not all(np.array_equal(ds[i]["img"], ClassificationDataset(
        ids, VOCDataset(fake_voc), "train", 64, resize_long=(40, 80))[i]["img"])
        for i in range(len(ds)))


def test_crop_places_small_image_inside_canvas():
    rng = np.random.default_rng(0)
    img = np.ones((10, 30, 3), np.float32)
    label = np.ones((10, 30), np.uint8)
    out_img, out_label = imutils.crop_arrays([img, label], [0.0, 255], 20, rng)
    assert out_img.shape == (20, 20, 3) and (out_label == 1).sum() == 10 * 20
    assert set(np.unique(out_label)) == {1, 255}


def test_pil_nearest_and_bicubic():
    label = np.arange(64, dtype=np.uint8).reshape(8, 8)
    # PIL NEAREST 8 -> 2 samples pixel floor((i + 0.5) * 4) = 2, 6
    assert imutils.pil_resize(label, (2, 2), 0).tolist() == [[18, 22], [50, 54]]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 14, 3)).astype(np.uint8)
    for scale, size in ((0.5, (7, 4)), (1.5, (21, 14))):  # (W, H) = round(14 s), round(9 s)
        want = np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))
        got = imutils.pil_rescale(img, scale, 3)
        assert got.dtype == np.uint8 and got.shape == size[::-1] + (3,)
        np.testing.assert_array_equal(got, want)
        assert (want != np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))).any()


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: pass --voc12_root"):
        VOCDataset(tmp_path / "nowhere")


def test_list_naming_a_missing_image(fake_voc):
    with pytest.raises(FileNotFoundError, match="1 images of mylist are missing.*ghost"):
        ClassificationDataset(["img_000", "ghost"], VOCDataset(fake_voc), "mylist", 32)


def test_list_entry_without_label(fake_voc, tmp_path):
    (tmp_path / "empty.csv").write_text("image_id,a,b,c\n")
    with pytest.raises(KeyError, match="no image-level label"):
        ClassificationDataset(["img_000"], VOCDataset(fake_voc, tmp_path / "empty.csv"),
                              "mylist", 32)


def test_missing_list_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="list file"):
        load_img_name_list(tmp_path / "train_aug.txt")


def test_voc_lists_and_labels_shipped():
    from voc12.dataloader import VOC12_DIR
    labels = ClassLabels.from_csv(VOC12_DIR / "cls_labels.csv")
    assert labels.n_classes == 20 and labels.names[0] == "aeroplane"
    ids = load_img_name_list(VOC12_DIR / "train_aug.txt")
    assert len(ids) == 10582
    labels.check_ids(ids, "train_aug")
    assert labels["2007_000032"].tolist()[0] == 1 and labels["2007_000032"][14] == 1
