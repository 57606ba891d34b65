//! A dataset folder with every kind of fault, through the real binary: `train` skips what it
//! cannot use (and lists it in `skipped.txt`), uses what it can, `--strict` refuses, a folder
//! with nothing usable is a clear error, and `eval` / `predict` skip the same files.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgba, RgbaImage};

/// Runs wgunet: its exit code, stdout and stderr.
fn wgunet(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgunet"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("wgunet runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wgunet_ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = wgunet(args);
    assert_eq!(code, Some(0), "wgunet {} failed:\n{stdout}{stderr}", args.join(" "));
    stdout
}

/// A disc on a noisy background, `side`×`side`, and its 0/255 mask.
fn disc(seed: u32, side: u32) -> (GrayImage, GrayImage) {
    let (cx, cy, r) = ((8 + seed * 5 % 16) as f32, (8 + seed * 7 % 16) as f32, (3 + seed % 5) as f32);
    let inside = |x: u32, y: u32| (x as f32 - cx).hypot(y as f32 - cy) < r;
    let image = GrayImage::from_fn(side, side, |x, y| {
        Luma([if inside(x, y) { 170 } else { 70 } + ((x * 31 + y * 17 + seed * 13) % 40) as u8])
    });
    let mask = GrayImage::from_fn(side, side, |x, y| Luma([if inside(x, y) { 255 } else { 0 }]));
    (image, mask)
}

fn png_bytes(image: &DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

/// A valid PNG of a few hundred bytes whose header declares `width`×`height` gray pixels: a
/// decompression bomb, if a decoder believed it.
fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8; 4], data: &[u8]| -> Vec<u8> {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        out
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray, deflate, no interlace
                                              // A stored (uncompressed) deflate block of one zero row, wrapped in zlib: valid but short.
    let idat = [0x78, 0x01, 0x01, 0x01, 0x00, 0xfe, 0xff, 0x00, 0x00, 0x00, 0x00, 0x01];
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &idat));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// What a faulty dataset should come to: the files skipped (with a piece of their reason),
/// the images of the pairs used, the mask that needs resizing.
struct Expected {
    skipped: BTreeMap<PathBuf, &'static str>,
    used: BTreeSet<PathBuf>,
    resized_mask: PathBuf,
}

/// `images/` + `masks/` with 10 clean pairs and every fault wgunet meets in real folders.
fn write_faulty_dataset(dir: &Path) -> Expected {
    let (images, masks) = (dir.join("images"), dir.join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let mut used = BTreeSet::new();
    let mut skipped = BTreeMap::new();
    let write = |path: &Path, bytes: &[u8]| std::fs::write(path, bytes).unwrap();
    let gray = |g: GrayImage| png_bytes(&DynamicImage::ImageLuma8(g));

    for i in 0..10 {
        let (image, mask) = disc(i, 32);
        image.save(images.join(format!("{i}.png"))).unwrap();
        mask.save(masks.join(format!("{i}.png"))).unwrap();
        used.insert(images.join(format!("{i}.png")));
    }
    let (image, mask) = disc(3, 32);
    let good_mask = gray(mask.clone());

    // Used: 16-bit and RGBA images, a 0/1 mask, a mask of another size.
    let deep: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(32, 32, |x, y| Luma([u16::from(image.get_pixel(x, y).0[0]) * 257]));
    write(&images.join("deep.png"), &png_bytes(&DynamicImage::ImageLuma16(deep)));
    let rgba = RgbaImage::from_fn(32, 32, |x, y| {
        let v = image.get_pixel(x, y).0[0];
        Rgba([v, v, v, 255])
    });
    write(&images.join("rgba.png"), &png_bytes(&DynamicImage::ImageRgba8(rgba)));
    let zero_one = GrayImage::from_fn(32, 32, |x, y| Luma([mask.get_pixel(x, y).0[0] / 255]));
    for (name, mask_bytes) in [("deep", good_mask.clone()), ("rgba", good_mask.clone()), ("zero_one", gray(zero_one))] {
        if name == "zero_one" {
            image.save(images.join("zero_one.png")).unwrap();
        }
        write(&masks.join(format!("{name}.png")), &mask_bytes);
        used.insert(images.join(format!("{name}.png")));
    }
    image.save(images.join("wide.png")).unwrap();
    let wide_mask = image::imageops::resize(&mask, 64, 48, image::imageops::FilterType::Nearest);
    wide_mask.save(masks.join("wide.png")).unwrap();
    used.insert(images.join("wide.png"));

    // Skipped, each with a good partner file.
    let valid_png = gray(image.clone());
    let faults: [(&str, Vec<u8>, &str); 4] = [
        ("empty", Vec::new(), "is empty"),
        ("truncated", valid_png[..valid_png.len() / 2].to_vec(), "is not a readable image"),
        ("text", b"this is a note, not a picture".to_vec(), "is not an image"),
        ("bomb", bomb_png(100_000, 100_000), "declares 100000×100000 pixels, over the decoding limit of 16384×16384"),
    ];
    for (name, bytes, reason) in faults {
        write(&images.join(format!("{name}.png")), &bytes);
        write(&masks.join(format!("{name}.png")), &good_mask);
        skipped.insert(images.join(format!("{name}.png")), reason);
    }
    image.save(images.join("cut.png")).unwrap();
    write(&masks.join("cut.png"), &good_mask[..good_mask.len() - 20]);
    skipped.insert(masks.join("cut.png"), "is not a readable image");
    image.save(images.join("lonely.png")).unwrap();
    skipped.insert(images.join("lonely.png"), "has no mask");
    mask.save(masks.join("orphan.png")).unwrap();
    skipped.insert(masks.join("orphan.png"), "is a mask with no image");

    // Ignored without a word: OS and hidden files, even with an image's name.
    write(&images.join(".DS_Store"), b"\0\0\0\x01Bud1");
    write(&images.join("Thumbs.db"), b"\xd0\xcf\x11\xe0");
    write(&images.join("._0.png"), b"\0\x05\x16\x07 AppleDouble");
    write(&masks.join("desktop.ini"), b"[.ShellClassInfo]");
    Expected { skipped, used, resized_mask: masks.join("wide.png") }
}

/// `PATH<TAB>REASON` lines of a skipped.txt.
fn skipped_list(path: &Path) -> BTreeMap<PathBuf, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let (file, reason) = line.split_once('\t').unwrap_or_else(|| panic!("not PATH<TAB>REASON: {line:?}"));
            (PathBuf::from(file), reason.to_string())
        })
        .collect()
}

fn images_listed(list: &Path) -> Vec<PathBuf> {
    wgunet::data::read_list(list).unwrap().into_iter().map(|p| p.image).collect()
}

fn assert_skipped(list: &Path, expected: &BTreeMap<PathBuf, &str>) {
    let listed = skipped_list(list);
    let (listed_files, expected_files): (Vec<_>, Vec<_>) = (listed.keys().collect(), expected.keys().collect());
    assert_eq!(listed_files, expected_files, "{} names other files", list.display());
    for (file, reason) in expected {
        assert!(listed[file].contains(reason), "{}: {:?} does not say {reason:?}", file.display(), listed[file]);
    }
}

#[test]
fn train_skips_what_it_cannot_use_and_strict_refuses() {
    let root = common::TempDir::new("train");
    let data = root.join("data");
    let expected = write_faulty_dataset(&data);
    let run = root.join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    #[rustfmt::skip]
    let args = [
        "train", "--data", &s(&data), "--no-plan", "--epochs", "1", "--size", "32", "--filters", "4", "--batch", "2",
        "--device", "cpu", "--out", &s(&run),
    ];
    let stdout = wgunet_ok(&args);

    // 19 pairs and 2 unpaired files looked at; 7 skipped, in one line.
    let summary: Vec<&str> = stdout.lines().filter(|l| l.starts_with("skipped ")).collect();
    let list = run.join("skipped.txt");
    assert_eq!(summary, [format!("skipped 7 of 21 pairs; see {}", list.display())], "{stdout}");
    assert_skipped(&list, &expected.skipped);
    let notices: Vec<&str> = stdout.lines().filter(|l| l.contains("resized")).collect();
    assert_eq!(notices.len(), 1, "{stdout}");
    assert!(notices[0].starts_with("note: 1 mask") && notices[0].contains(&s(&expected.resized_mask)), "{stdout}");

    let train = images_listed(&run.join("train.txt"));
    let test = images_listed(&run.join("test.txt"));
    assert!(!train.is_empty() && !test.is_empty());
    let listed: BTreeSet<PathBuf> = train.iter().chain(&test).cloned().collect();
    assert_eq!(listed.len(), train.len() + test.len(), "a pair is in both lists");
    assert_eq!(listed, expected.used, "train.txt + test.txt are not exactly the usable pairs");
    // The split is the folder's split with the bad pairs taken out: no other pair moved.
    let (all_train, all_test) =
        wgunet::data::split(&wgunet::data::find_pairs(&data).unwrap().pairs, 0.7, 42, None).unwrap();
    let kept = |side: Vec<wgunet::data::Pair>| -> Vec<PathBuf> {
        side.into_iter().map(|p| p.image).filter(|image| expected.used.contains(image)).collect()
    };
    assert_eq!((train.clone(), test.clone()), (kept(all_train), kept(all_test)));
    assert!(stdout.contains(&format!("decoded {} images", expected.used.len())), "{stdout}");

    // --strict: the first file of skipped.txt, with its reason, is the error.
    let (first, reason) = skipped_list(&list).into_iter().next().unwrap();
    let strict_run = s(&root.join("strict"));
    let strict_args: Vec<&str> =
        args.iter().map(|&a| if a == s(&run) { strict_run.as_str() } else { a }).chain(["--strict"]).collect();
    let (code, _, stderr) = wgunet(&strict_args);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--strict: {} {reason}", first.display())), "{stderr}");
    assert!(!root.join("strict/model.json").exists(), "--strict trained anyway");

    // Lists (--train-list/--test-list) naming bad pairs: skipped the same way.
    let pair = |name: &str| wgunet::data::Pair {
        image: data.join(format!("images/{name}.png")),
        mask: data.join(format!("masks/{name}.png")),
    };
    let lists = root.join("lists");
    wgunet::data::write_list(&lists.join("train.txt"), &[pair("0"), pair("empty"), pair("1"), pair("cut")]).unwrap();
    wgunet::data::write_list(&lists.join("test.txt"), &[pair("2"), pair("text")]).unwrap();
    let list_run = root.join("list-run");
    #[rustfmt::skip]
    let stdout = wgunet_ok(&[
        "train", "--train-list", &s(&lists.join("train.txt")), "--test-list", &s(&lists.join("test.txt")),
        "--epochs", "1", "--size", "32", "--filters", "4", "--device", "cpu", "--out", &s(&list_run),
    ]);
    assert!(
        stdout.contains(&format!("skipped 3 of 6 pairs; see {}", list_run.join("skipped.txt").display())),
        "{stdout}"
    );
    let bad = ["images/empty.png", "masks/cut.png", "images/text.png"];
    let listed: Vec<PathBuf> = skipped_list(&list_run.join("skipped.txt")).into_keys().collect();
    assert_eq!(listed, BTreeSet::from(bad.map(|f| data.join(f))).into_iter().collect::<Vec<_>>());
    assert_eq!(images_listed(&list_run.join("train.txt")), [pair("0").image, pair("1").image]);
    assert_eq!(images_listed(&list_run.join("test.txt")), [pair("2").image]);

    // eval on the same folder: the same pairs skipped, the rest scored.
    let eval_out = root.join("eval");
    let stdout =
        wgunet_ok(&["eval", "--model", &s(&run), "--data", &s(&data), "--device", "cpu", "--out", &s(&eval_out)]);
    assert!(
        stdout.contains(&format!("skipped 7 of 21 pairs; see {}", eval_out.join("skipped.txt").display())),
        "{stdout}"
    );
    assert_skipped(&eval_out.join("skipped.txt"), &expected.skipped);
    let rows = std::fs::read_to_string(eval_out.join("per_image.csv")).unwrap().lines().count() - 1;
    assert_eq!(rows, expected.used.len());

    // predict on the images folder: every readable image gets a mask, the rest are listed.
    let masks = root.join("predicted");
    let stdout = wgunet_ok(&[
        "predict",
        "--model",
        &s(&run),
        "--input",
        &s(&data.join("images")),
        "--output",
        &s(&masks),
        "--device",
        "cpu",
    ]);
    let unreadable: BTreeMap<PathBuf, &str> = expected
        .skipped
        .iter()
        .filter(|(f, _)| f.parent() == Some(&data.join("images")) && !f.ends_with("lonely.png"))
        .map(|(f, r)| (f.clone(), *r))
        .collect();
    assert_eq!(unreadable.len(), 4);
    assert_skipped(&masks.join("skipped.txt"), &unreadable);
    let written = std::fs::read_dir(&masks)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    // 16 image files decode: the used ones, lonely.png and cut.png's image.
    assert_eq!(written, expected.used.len() + 2, "{stdout}");
    assert!(stdout.contains(&format!("wrote {written} masks")), "{stdout}");

    // --strict: eval and predict stop at a file they cannot use, naming it.
    let strict_json = root.join("strict.json");
    #[rustfmt::skip]
    let (code, stdout, stderr) = wgunet(&[
        "eval", "--model", &s(&run), "--data", &s(&data), "--device", "cpu", "--strict", "--json", &s(&strict_json),
    ]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--strict: ") && stderr.contains("run without --strict"), "{stderr}");
    assert!(expected.skipped.keys().any(|f| stderr.contains(&f.display().to_string())), "{stderr}");
    assert!(!strict_json.exists(), "eval --strict wrote metrics");
    #[rustfmt::skip]
    let (code, stdout, stderr) = wgunet(&[
        "predict", "--model", &s(&run), "--input", &s(&data.join("images")), "--output", &s(&root.join("strict")),
        "--device", "cpu", "--strict",
    ]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(unreadable.keys().any(|f| stderr.contains(&f.display().to_string())), "{stderr}");
}

#[test]
fn a_clean_folder_skips_nothing() {
    let root = common::TempDir::new("clean");
    let data = root.join("data");
    for dir in ["images", "masks"] {
        std::fs::create_dir_all(data.join(dir)).unwrap();
    }
    for i in 0..8 {
        let (image, mask) = disc(i, 32);
        image.save(data.join(format!("images/{i}.png"))).unwrap();
        mask.save(data.join(format!("masks/{i}.png"))).unwrap();
    }
    let run = root.join("run");
    #[rustfmt::skip]
    let stdout = wgunet_ok(&[
        "train", "--data", data.to_str().unwrap(), "--no-plan", "--epochs", "1", "--size", "32", "--filters", "4",
        "--device", "cpu", "--out", run.to_str().unwrap(), "--strict",
    ]);
    assert!(!stdout.contains("skipped") && !stdout.contains("resized"), "{stdout}");
    assert_eq!(std::fs::read_to_string(run.join("skipped.txt")).unwrap(), "");
    let (train, test) = wgunet::data::split(&wgunet::data::find_pairs(&data).unwrap().pairs, 0.7, 42, None).unwrap();
    assert_eq!(wgunet::data::read_list(&run.join("train.txt")).unwrap(), train);
    assert_eq!(wgunet::data::read_list(&run.join("test.txt")).unwrap(), test);
}

#[test]
fn a_folder_of_only_bad_files_is_a_clear_error() {
    let root = common::TempDir::new("only-bad");
    let data = root.join("data");
    let (images, masks) = (data.join("images"), data.join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let (_, mask) = disc(1, 32);
    for (name, bytes) in [("empty", Vec::new()), ("text", b"not a picture".to_vec()), ("bomb", bomb_png(20_000, 30))] {
        std::fs::write(images.join(format!("{name}.png")), bytes).unwrap();
        mask.save(masks.join(format!("{name}.png"))).unwrap();
    }
    std::fs::write(images.join(".DS_Store"), b"junk").unwrap();
    // The plan reads the data first and names what it left out.
    let (code, stdout, stderr) = wgunet(&["plan", "--data", data.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("no usable image/mask pair")
            && stderr.contains("saw 3 pairs and left out 3 files")
            && stderr.contains("empty.png is empty"),
        "{stderr}"
    );
    let run = root.join("run");
    #[rustfmt::skip]
    let (code, stdout, stderr) = wgunet(&[
        "train", "--data", data.to_str().unwrap(), "--no-plan", "--epochs", "1", "--size", "32", "--filters", "4",
        "--device", "cpu", "--out", run.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("no usable image/mask pair")
            && stderr.contains("saw 6 image files, 3 pairs, and skipped 3 files")
            && stderr.contains("empty.png is empty")
            && stderr.contains("declares 20000×30 pixels"),
        "{stderr}"
    );
    assert_eq!(skipped_list(&run.join("skipped.txt")).len(), 3);
}
