//! A run stopped at any moment loses nothing: killed (SIGKILL) or interrupted (SIGINT) and then
//! resumed, it ends with the same metrics and weights as a run that never stopped; a diverging
//! loss stops it with a clear message.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::TempDir;

/// Three epochs of 21 steps on 60 tiny synthetic slices (42 for training), with augmentation
/// (its random state must survive a resume): about a second an epoch on lavapipe.
#[rustfmt::skip]
const TINY: [&str; 14] = [
    "--device", "cpu", "--size", "32", "--filters", "4", "--batch", "2", "--synth-count", "60", "--epochs", "3",
    "--augment", "full",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn wgunet_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wgunet"));
    command.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    command
}

/// Runs wgunet to its end: exit code, and stdout and stderr together.
fn wgunet_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = wgunet_command().args(args).output().expect("wgunet runs");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn wgunet(args: &[&str]) -> String {
    common::run_wgunet(env!("CARGO_BIN_EXE_wgunet"), args)
}

/// `wgunet train TINY --out RUN` in the background, its output going to RUN.log.
fn spawn_train(run: &Path) -> Child {
    let log = File::create(run.with_extension("log")).unwrap();
    wgunet_command()
        .arg("train")
        .args(TINY)
        .args(["--out", s(run)])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("wgunet starts")
}

/// The epochs completed in RUN's checkpoint (None while there is none).
fn checkpoint_epoch(run: &Path) -> Option<u64> {
    let bytes = std::fs::read(run.join("train-state.safetensors")).ok()?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let progress: serde_json::Value = serde_json::from_str(&metadata.metadata().as_ref().unwrap()["progress"]).unwrap();
    progress["epoch"].as_u64()
}

/// Waits until the training in `child` has checkpointed `epoch` (it is then in the next one).
fn wait_for_checkpoint(child: &mut Child, run: &Path, epoch: u64) {
    let start = Instant::now();
    while checkpoint_epoch(run).is_none_or(|e| e < epoch) {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(run.with_extension("log")).unwrap_or_default();
            panic!("training ended ({status}) before its checkpoint of epoch {epoch}:\n{log}");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint of epoch {epoch} after 5 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The uninterrupted run every stopped-and-resumed run must reproduce (trained once).
fn reference_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        // Shared by the tests of this process, so kept when they end: under Cargo's scratch
        // space for tests (target/tmp), not the system's.
        let run = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("resume-reference-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        let mut args = vec!["train"];
        args.extend(TINY);
        args.extend(["--out", s(&run)]);
        wgunet(&args);
        run
    })
}

/// metrics.csv without its last column (images/s, a measurement of the machine's speed).
fn metrics_without_throughput(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let rows: Vec<String> = text.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect();
    assert!(rows[0].ends_with("micro_dice"), "unexpected header {}", rows[0]);
    rows
}

fn assert_same_results(resumed: &Path, reference: &Path) {
    let rows = metrics_without_throughput(resumed);
    assert_eq!(rows.len(), 4, "a header and 3 epochs: {rows:?}");
    assert_eq!(rows, metrics_without_throughput(reference), "metrics.csv differs from the uninterrupted run");
    for file in ["best.safetensors", "last.safetensors", "metrics.json"] {
        let (a, b) = (std::fs::read(resumed.join(file)).unwrap(), std::fs::read(reference.join(file)).unwrap());
        assert!(a == b, "{file} differs from the uninterrupted run's");
    }
}

#[test]
fn killed_run_resumes_to_the_same_results() {
    let dir = TempDir::new("killed");
    let run = dir.join("run");
    let mut child = spawn_train(&run);
    wait_for_checkpoint(&mut child, &run, 1);
    child.kill().unwrap(); // SIGKILL, in epoch 2
    child.wait().unwrap();
    assert_eq!(checkpoint_epoch(&run), Some(1), "the kill should land in epoch 2");
    let out = wgunet(&["train", "--resume", s(&run)]);
    assert!(out.contains(&format!("resuming {} after epoch 1 of 3", run.display())), "{out}");
    assert_same_results(&run, reference_run());
}

/// metrics.csv gets epoch 2's row before the checkpoint of epoch 2 is written (curves, weights
/// and model.json come between): a kill right after the row usually lands there, and the resume
/// must drop the row and redo the epoch.
#[test]
fn run_killed_while_ending_an_epoch_resumes_to_the_same_results() {
    let dir = TempDir::new("killed-at-epoch-end");
    let run = dir.join("run");
    let mut child = spawn_train(&run);
    let start = Instant::now();
    let csv_rows = || std::fs::read_to_string(run.join("metrics.csv")).map_or(0, |t| t.lines().count());
    while csv_rows() < 3 {
        assert!(child.try_wait().unwrap().is_none(), "training ended before epoch 2");
        assert!(start.elapsed() < Duration::from_secs(300), "no epoch 2 after 5 minutes");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    println!("killed with {} epochs in metrics.csv and {:?} in the checkpoint", csv_rows() - 1, checkpoint_epoch(&run));
    wgunet(&["train", "--resume", s(&run)]);
    assert_same_results(&run, reference_run());
}

#[test]
fn interrupted_run_says_how_to_resume_and_resumes_to_the_same_results() {
    let dir = TempDir::new("sigint");
    let run = dir.join("run");
    let mut child = spawn_train(&run);
    wait_for_checkpoint(&mut child, &run, 1);
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(run.with_extension("log")).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains(&format!("Resume with: wgunet train --resume {}", run.display())), "{log}");
    assert!(log.contains("keeps the checkpoint of epoch 1"), "{log}");
    assert_eq!(checkpoint_epoch(&run), Some(1));
    wgunet(&["train", "--resume", s(&run)]);
    assert_same_results(&run, reference_run());
}

/// Adam's first step moves every weight by about the learning rate, so both blow up at once: the
/// loss read back after step 8 of epoch 1 gives it away, before any epoch finished.
#[test]
fn diverging_loss_stops_in_the_first_epoch_without_usable_weights() {
    for (lr, tenth) in [("1e6", "100000"), ("1e30", "1e29")] {
        let dir = TempDir::new(&format!("diverge-{lr}"));
        let run = dir.join("run");
        let (code, out) = wgunet_exit(&[
            "train",
            "--device",
            "cpu",
            "--size",
            "32",
            "--filters",
            "4",
            "--batch",
            "2",
            "--synth-count",
            "60",
            "--epochs",
            "3",
            "--lr",
            lr,
            "--out",
            s(&run),
        ]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("training diverged in epoch 1 at step 8:"), "--lr {lr}: {out}");
        assert!(out.contains(&format!("No epoch finished, so {} holds no usable weights", run.display())), "{out}");
        assert!(out.contains(&format!("e.g. --lr {tenth} (a tenth of --lr {lr})")), "{out}");
        assert_eq!(std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 1, "header only");
        assert!(!run.join("best.safetensors").exists() && !run.join("last.safetensors").exists());
        let (code, out) = wgunet_exit(&["eval", "--model", s(&run), "--device", "cpu"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("holds no weights"), "{out}");
    }
}

/// A finished run resumed with a larger --epochs trains on as if it had been started with it.
#[test]
fn finished_run_trains_longer_with_a_larger_epochs() {
    let root = TempDir::new("longer");
    let (longer, four) = (root.join("longer"), root.join("four"));
    let copied = Command::new("cp").args(["-r", s(reference_run()), s(&longer)]).status().unwrap();
    assert!(copied.success());
    let out = wgunet(&["train", "--resume", s(&longer), "--epochs", "4"]);
    assert!(out.contains("after epoch 3 of 4") && out.contains("epoch 4/4:"), "{out}");
    let mut args = vec!["train"];
    args.extend(TINY);
    let epochs = args.iter().position(|a| *a == "--epochs").unwrap();
    args[epochs + 1] = "4";
    args.extend(["--out", s(&four)]);
    wgunet(&args);
    let rows = metrics_without_throughput(&longer);
    assert_eq!(rows.len(), 5, "a header and 4 epochs: {rows:?}");
    assert_eq!(rows, metrics_without_throughput(&four));
    for file in ["best.safetensors", "last.safetensors"] {
        assert!(std::fs::read(longer.join(file)).unwrap() == std::fs::read(four.join(file)).unwrap(), "{file} differs");
    }
}

#[test]
fn resume_refuses_what_it_cannot_continue() {
    let reference = reference_run();
    let (code, out) = wgunet_exit(&["train", "--resume", s(reference)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("has run 3 epochs and finished (give a larger --epochs to train it longer): nothing to resume"),
        "{out}"
    );

    let (code, out) = wgunet_exit(&["train", "--resume", s(reference), "--size", "64", "--lr", "1e-3", "--batch", "4"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--size, --batch differ from the options"), "{out}");

    let (code, out) = wgunet_exit(&["train", "--resume", s(reference), "--epochs", "2"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("--epochs 2:") && out.contains("was started with --epochs 3; resuming can only raise it"),
        "{out}"
    );

    let empty = TempDir::new("not-a-run");
    let (code, out) = wgunet_exit(&["train", "--resume", s(&empty)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("{} is not a run folder written by `wgunet train`", empty.display())), "{out}");

    let damaged = TempDir::new("damaged");
    std::fs::write(damaged.join("train-state.safetensors"), b"not a checkpoint").unwrap();
    let (code, out) = wgunet_exit(&["train", "--resume", s(&damaged)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not a wgunet training checkpoint"), "{out}");
}
