//! Tests of [`OutputPlan::check`] on real files in temporary folders.

use super::*;

fn plan_error(build: impl FnOnce(&mut OutputPlan)) -> String {
    let mut plan = OutputPlan::new();
    build(&mut plan);
    let error = plan.check().expect_err("the plan should be refused");
    let text = error.to_string();
    assert!(!text.contains('\n'), "{text}");
    text
}

#[test]
fn a_fresh_report_in_a_new_folder_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("model.safetensors");
    std::fs::write(&checkpoint, b"weights").unwrap();
    let mut plan = OutputPlan::new();
    plan.input("checkpoint", &checkpoint)
        .report("--report", &dir.path().join("new/deeper/report.json"), true)
        .output(
            "--save-adversarial",
            dir.path().join("adv.safetensors"),
            OutputKind::Safetensors,
        );
    plan.check().unwrap();
    assert!(!dir.path().join("new").exists(), "checking creates nothing");
}

#[test]
fn the_report_may_not_be_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("model.pt");
    std::fs::write(&checkpoint, b"weights").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    // The same file through `..`.
    let sneaky = dir.path().join("sub/../model.pt");
    let text = plan_error(|p| {
        p.input("checkpoint", &checkpoint)
            .report("--report", &sneaky, true);
    });
    assert!(text.contains("is the checkpoint this run reads"), "{text}");
    // The data folder, and its files.
    let data = dir.path().join("cifar");
    std::fs::create_dir(&data).unwrap();
    let text = plan_error(|p| {
        p.input("data", &data).report("--report", &data, true);
    });
    assert!(
        text.contains("is a folder") || text.contains("data"),
        "{text}"
    );
    let text = plan_error(|p| {
        p.input("checkpoint", &checkpoint).output(
            "--save-adversarial",
            &checkpoint,
            OutputKind::Safetensors,
        );
    });
    assert!(text.contains("is the checkpoint"), "{text}");
}

#[test]
fn folders_and_folder_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = plan_error(|p| {
        p.report("--report", dir.path(), true);
    });
    assert!(text.contains("is a folder"), "{text}");
    let slash = PathBuf::from(format!("{}/missing/", dir.path().display()));
    let text = plan_error(|p| {
        p.report("--report", &slash, true);
    });
    assert!(text.contains("is a folder"), "{text}");
    // A folder where a derived file goes.
    std::fs::create_dir(dir.path().join("r.json.state")).unwrap();
    let text = plan_error(|p| {
        p.report("--report", &dir.path().join("r.json"), true);
    });
    assert!(text.contains("the state file of --report"), "{text}");
}

#[test]
fn unrelated_existing_files_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let readme = dir.path().join("README.json");
    std::fs::write(&readme, br#"{"name": "not a report"}"#).unwrap();
    let text = plan_error(|p| {
        p.report("--report", &readme, true);
    });
    assert!(text.contains("is not an AutoAttack report"), "{text}");
    // An unfinished evaluation is continued only when asked.
    let state = dir.path().join("report.json.state");
    std::fs::write(
        &state,
        br#"{"config": {}, "range": [0, 1], "robust_mask": []}"#,
    )
    .unwrap();
    let text = plan_error(|p| {
        p.report("--report", &dir.path().join("report.json"), true);
    });
    assert!(text.contains("pass --resume"), "{text}");
    OutputPlan::new()
        .resuming(true)
        .report("--report", &dir.path().join("report.json"), true)
        .check()
        .unwrap();
    std::fs::remove_file(&state).unwrap();
    // Our own earlier report may be replaced, but not an unrelated Markdown file beside it.
    let report = dir.path().join("report.json");
    std::fs::write(
        &report,
        br#"{"config": {}, "clean_mask": [], "robust_mask": []}"#,
    )
    .unwrap();
    OutputPlan::new()
        .report("--report", &report, true)
        .check()
        .unwrap();
    std::fs::write(dir.path().join("report.md"), b"# My notes\n").unwrap();
    let text = plan_error(|p| {
        p.report("--report", &report, true);
    });
    assert!(text.contains("the Markdown copy of --report"), "{text}");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"notes").unwrap();
    let text = plan_error(|p| {
        p.output("--save-adversarial", &notes, OutputKind::Safetensors);
    });
    assert!(text.contains("is not a safetensors file"), "{text}");
    // A leftover log with no state beside it is not ours either.
    std::fs::remove_file(dir.path().join("report.md")).unwrap();
    std::fs::write(dir.path().join("report.json.state.adv"), b"precious").unwrap();
    let text = plan_error(|p| {
        p.report("--report", &report, true);
    });
    assert!(text.contains("adversarial log"), "{text}");
}

#[test]
fn a_markdown_report_path_and_colliding_outputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = plan_error(|p| {
        p.report("--report", &dir.path().join("out.md"), true);
    });
    assert!(text.contains("ends in .md"), "{text}");
    let text = plan_error(|p| {
        p.report("--report", &dir.path().join("r.json"), true)
            .output(
                "--save-adversarial",
                dir.path().join("r.md"),
                OutputKind::Safetensors,
            );
    });
    assert!(text.contains("is also the Markdown copy"), "{text}");
}

#[test]
fn an_unwritable_or_impossible_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let text = plan_error(|p| {
        p.report("--report", &file.join("report.json"), true);
    });
    assert!(text.contains("is not a folder"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        // Root writes anywhere: only check where permissions hold.
        if tempfile::tempfile_in(&locked).is_err() {
            let text = plan_error(|p| {
                p.report("--report", &locked.join("report.json"), true);
            });
            assert!(text.contains("cannot write in"), "{text}");
        }
    }
}

#[cfg(unix)]
#[test]
fn a_symlinked_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let link = dir.path().join("report.json.state.adv");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let text = plan_error(|p| {
        p.report("--report", &dir.path().join("report.json"), true);
    });
    assert!(text.contains("symbolic link"), "{text}");
}

#[test]
fn folder_outputs_must_be_folders() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let text = plan_error(|p| {
        p.output("--out", &file, OutputKind::Folder);
    });
    assert!(text.contains("is not a folder"), "{text}");
    OutputPlan::new()
        .output("--out", dir.path(), OutputKind::Folder)
        .check()
        .unwrap();
}
