//! `data::find_pairs` on every accepted layout, built as small temporary folder trees.

mod common;

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, RgbImage};
use wgunet::data::{describe, find_pairs, Pairing};

/// A fresh folder tree of small images (common::TempDir: removed when dropped).
struct TempTree(common::TempDir);

impl TempTree {
    fn new(name: &str) -> Self {
        Self(common::TempDir::new(&format!("pairing-{name}")))
    }

    /// Writes a small image at `relative`; the extension picks the format (JPEGs in colour).
    fn image(&self, relative: &str) -> PathBuf {
        let path = self.0.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let ext = path.extension().unwrap().to_string_lossy().to_lowercase();
        if ext == "jpg" || ext == "jpeg" {
            RgbImage::from_pixel(8, 6, image::Rgb([200, 120, 40])).save(&path).unwrap();
        } else {
            GrayImage::from_fn(8, 6, |x, _| Luma([(x * 30) as u8])).save(&path).unwrap();
        }
        path
    }

    fn images(&self, relatives: &[&str]) {
        for r in relatives {
            self.image(r);
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.0.path(relative)
    }
}

/// (image, mask) paths relative to the tree, as strings with '/'.
fn relative_pairs(tree: &TempTree, pairing: &Pairing) -> Vec<(String, String)> {
    let rel = |p: &Path| p.strip_prefix(&*tree.0).unwrap().to_string_lossy().replace('\\', "/");
    pairing.pairs.iter().map(|p| (rel(&p.image), rel(&p.mask))).collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn images_and_masks_folders_with_an_unmatched_image() {
    let tree = TempTree::new("folders");
    tree.images(&["images/b.png", "images/a.png", "images/c.png", "masks/a.png", "masks/b.png"]);
    let pairing = find_pairs(&tree.0).unwrap();
    assert_eq!(
        relative_pairs(&tree, &pairing),
        owned(&[("images/a.png", "masks/a.png"), ("images/b.png", "masks/b.png")])
    );
    assert_eq!(pairing.unmatched_images, vec![tree.path("images/c.png")]);
    assert_eq!(pairing.layout, "images/ + masks/ folders");
    let text = describe(&pairing);
    assert!(text.starts_with("found 2 pairs (images/ + masks/ folders)"), "{text}");
    assert!(text.contains("1 image without a mask: c.png"), "{text}");
}

#[test]
fn parent_of_several_folder_pairs_keeps_each_mask_with_its_own_images() {
    let tree = TempTree::new("nested");
    // The same file names in train and test: only the folders tell them apart.
    tree.images(&[
        "train/images/x.png",
        "train/masks/x.png",
        "test/images/x.png",
        "test/masks/x.png",
        "test/images/y.png",
        "test/masks/y.png",
    ]);
    let pairing = find_pairs(&tree.0).unwrap();
    assert_eq!(
        relative_pairs(&tree, &pairing),
        owned(&[
            ("test/images/x.png", "test/masks/x.png"),
            ("test/images/y.png", "test/masks/y.png"),
            ("train/images/x.png", "train/masks/x.png"),
        ])
    );
    assert!(pairing.unmatched_images.is_empty());
}

#[test]
fn flat_folder_with_mask_suffixes() {
    let tree = TempTree::new("flat");
    tree.images(&[
        "a.png",
        "a_mask.png",
        "b.jpg",
        "b_seg.png",
        "c.png",
        "c_gt.png",
        "d.tif",
        "d_label.tif",
        "e.bmp",
        "e-mask.bmp",
        "F.PNG",
        "F_Mask.png",
        "g.jpeg",
        "g_segmentation.png",
        "h.png",
    ]);
    // Not images: ignored.
    std::fs::write(tree.path("notes.txt"), "not an image").unwrap();
    std::fs::write(tree.path(".hidden.png"), "not even a png").unwrap();
    let pairing = find_pairs(&tree.0).unwrap();
    assert_eq!(
        relative_pairs(&tree, &pairing),
        owned(&[
            ("F.PNG", "F_Mask.png"),
            ("a.png", "a_mask.png"),
            ("b.jpg", "b_seg.png"),
            ("c.png", "c_gt.png"),
            ("d.tif", "d_label.tif"),
            ("e.bmp", "e-mask.bmp"),
            ("g.jpeg", "g_segmentation.png"),
        ])
    );
    assert_eq!(pairing.unmatched_images, vec![tree.path("h.png")]);
    assert!(pairing.layout.contains("in one folder"), "{}", pairing.layout);
}

#[test]
fn pratheepan_ground_truth_folders_pair_with_their_image_folders() {
    let tree = TempTree::new("pratheepan");
    tree.images(&[
        "Pratheepan_Dataset/FacePhoto/06Apr03Face.jpg",
        "Pratheepan_Dataset/FacePhoto/chenhao.jpg",
        "Pratheepan_Dataset/FamilyPhoto/2007_family.jpeg",
        // Same stem as a face photo: only the folder names can pick the right mask.
        "Pratheepan_Dataset/FamilyPhoto/chenhao.jpeg",
        "Ground_Truth/GroundT_FacePhoto/06Apr03Face.png",
        "Ground_Truth/GroundT_FacePhoto/chenhao.png",
        "Ground_Truth/GroundT_FamilyPhoto/2007_family.png",
        "Ground_Truth/GroundT_FamilyPhoto/chenhao.png",
    ]);
    let pairing = find_pairs(&tree.0).unwrap();
    assert_eq!(
        relative_pairs(&tree, &pairing),
        owned(&[
            ("Pratheepan_Dataset/FacePhoto/06Apr03Face.jpg", "Ground_Truth/GroundT_FacePhoto/06Apr03Face.png"),
            ("Pratheepan_Dataset/FacePhoto/chenhao.jpg", "Ground_Truth/GroundT_FacePhoto/chenhao.png"),
            ("Pratheepan_Dataset/FamilyPhoto/2007_family.jpeg", "Ground_Truth/GroundT_FamilyPhoto/2007_family.png"),
            ("Pratheepan_Dataset/FamilyPhoto/chenhao.jpeg", "Ground_Truth/GroundT_FamilyPhoto/chenhao.png"),
        ])
    );
    assert!(pairing.unmatched_images.is_empty());
    assert!(pairing.layout.contains("FacePhoto/ + GroundT_FacePhoto/"), "{}", pairing.layout);
}

#[test]
fn every_mask_folder_name_is_recognised() {
    let tree = TempTree::new("names");
    let names =
        ["mask", "Masks", "label", "labels", "GT", "ground truth", "ground_truth", "GroundTruth", "train_masks"];
    for (i, name) in names.iter().enumerate() {
        tree.image(&format!("set{i}/images/s.png"));
        tree.image(&format!("set{i}/{name}/s.png"));
    }
    let pairing = find_pairs(&tree.0).unwrap();
    let expected: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (format!("set{i}/images/s.png"), format!("set{i}/{name}/s.png")))
        .collect();
    assert_eq!(relative_pairs(&tree, &pairing), expected);
}

/// Files left unpaired each come with their reason; hidden and OS files are not even counted.
#[test]
fn unpaired_files_say_why_and_hidden_files_are_not_seen() {
    let tree = TempTree::new("unpaired");
    tree.images(&["images/a.png", "images/b.png", "masks/a.png", "masks/z.png", "c.png", "c_mask.png", "c_gt.png"]);
    tree.images(&["images/._a.png", "images/.hidden.png"]);
    for junk in [".DS_Store", "images/Thumbs.db", "masks/desktop.ini", "masks/THUMBS.DB"] {
        std::fs::write(tree.path(junk), "junk").unwrap();
    }
    let pairing = find_pairs(&tree.0).unwrap();
    assert_eq!(relative_pairs(&tree, &pairing), owned(&[("images/a.png", "masks/a.png")]));
    assert_eq!(pairing.files, 7);
    let unpaired: Vec<(PathBuf, &str)> = pairing.unpaired.iter().map(|u| (u.path.clone(), u.reason.as_str())).collect();
    let mask_alone = "is a mask with no image (no image file of the same name)";
    assert_eq!(
        unpaired,
        [
            (tree.path("c.png"), "has several equally likely masks (c_gt.png, c_mask.png): keep one"),
            (tree.path("c_gt.png"), mask_alone),
            (tree.path("c_mask.png"), mask_alone),
            (tree.path("images/b.png"), "has no mask (no mask file of the same name)"),
            (tree.path("masks/z.png"), mask_alone),
        ]
    );
}

#[test]
fn numeric_names_pair_by_stem_and_masks_may_have_another_extension() {
    let tree = TempTree::new("numeric");
    for i in 1..=12 {
        tree.image(&format!("images/{i}.jpg"));
    }
    // Masks written in another order than the images sort in, and as PNG.
    for i in (1..=12).rev() {
        tree.image(&format!("masks/{i}.png"));
    }
    let pairing = find_pairs(&tree.0).unwrap();
    assert_eq!(pairing.pairs.len(), 12);
    for pair in &pairing.pairs {
        assert_eq!(pair.image.file_stem(), pair.mask.file_stem(), "{pair:?}");
        assert_eq!(pair.mask.extension().unwrap(), "png");
    }
    let images: Vec<&PathBuf> = pairing.pairs.iter().map(|p| &p.image).collect();
    let mut sorted = images.clone();
    sorted.sort();
    assert_eq!(images, sorted, "pairs come out sorted by image path");
}

#[test]
fn images_with_a_suffix_pair_with_masks_with_another() {
    let tree = TempTree::new("sat");
    tree.images(&["train/104_sat.jpg", "train/104_mask.png", "train/207_sat.jpg", "train/207_mask.png"]);
    let pairing = find_pairs(&tree.0).unwrap();
    assert_eq!(
        relative_pairs(&tree, &pairing),
        owned(&[("train/104_sat.jpg", "train/104_mask.png"), ("train/207_sat.jpg", "train/207_mask.png")])
    );
}

#[test]
fn describe_lists_at_most_ten_unmatched_images() {
    let tree = TempTree::new("many-unmatched");
    tree.images(&["images/a.png", "masks/a.png"]);
    for i in 0..15 {
        tree.image(&format!("images/lonely{i:02}.png"));
    }
    let text = describe(&find_pairs(&tree.0).unwrap());
    assert!(text.contains("15 images without a mask: lonely00.png"), "{text}");
    assert!(text.contains("lonely09.png, …"), "{text}");
    assert!(!text.contains("lonely10.png"), "{text}");
}

#[test]
fn folders_without_pairs_are_errors_that_say_what_was_seen() {
    let empty = TempTree::new("empty");
    let e = format!("{:#}", find_pairs(&empty.0).unwrap_err());
    assert!(e.contains(&empty.0.display().to_string()), "{e}");
    assert!(e.contains("0 images and 0 masks"), "{e}");
    assert!(e.contains("accepted layouts"), "{e}");

    let only_images = TempTree::new("only-images");
    only_images.images(&["a.png", "b.png", "c.jpg"]);
    let e = format!("{:#}", find_pairs(&only_images.0).unwrap_err());
    assert!(e.contains("3 images and 0 masks"), "{e}");

    let unrelated = TempTree::new("unrelated");
    unrelated.images(&["images/a.png", "masks/b.png"]);
    let e = format!("{:#}", find_pairs(&unrelated.0).unwrap_err());
    assert!(e.contains("1 image and 1 mask"), "{e}");

    let e = format!("{:#}", find_pairs(&unrelated.path("images")).unwrap_err());
    assert!(e.contains("point at the folder above"), "{e}");

    let missing = empty.path("does-not-exist");
    let e = format!("{:#}", find_pairs(&missing).unwrap_err());
    assert!(e.contains("does-not-exist") && e.contains("does not exist"), "{e}");
}
