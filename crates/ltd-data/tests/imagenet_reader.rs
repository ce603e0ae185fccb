//! The ImageNet reader on a miniature tree: torchvision `ImageFolder`'s listing and labels, a
//! flat `val/` with each label-file format, class-index files, RobustBench subset files.

mod imagenet_common;

use std::fs;
use std::path::Path;

use imagenet_common::{build_tree, fixture_text};
use ltd_data::imagenet::{ClassIndex, ImageList};
use ltd_data::{open_imagenet, DataError, ImageNetOptions, ImageNetSplit};

/// `relative path → label` lines of the listing, as imagefolder.txt writes them.
fn listing(list: &ImageList, root: &Path) -> Vec<String> {
    list.entries()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.path.strip_prefix(root).unwrap().display(),
                e.label
            )
        })
        .collect()
}

fn torchvision_listing(split: &str) -> (Vec<String>, Vec<String>) {
    let text = fixture_text("imagefolder.txt");
    let mut classes = Vec::new();
    let mut lines = Vec::new();
    let mut current = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let (name, wnids) = rest.split_once(" classes: ").unwrap();
            current = if name == "train" { "train" } else { "val" };
            if current == split {
                classes = wnids.split(' ').map(String::from).collect();
            }
        } else if current == split {
            lines.push(line.to_string());
        }
    }
    (classes, lines)
}

#[test]
fn class_folders_are_listed_as_torchvision_imagefolder_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    for (split, name) in [(ImageNetSplit::Train, "train"), (ImageNetSplit::Val, "val")] {
        let list = open_imagenet(dir.path(), split, &ImageNetOptions::default()).unwrap();
        let (classes, expected) = torchvision_listing(name);
        assert_eq!(list.classes().wnids(), classes.as_slice(), "{name} classes");
        assert_eq!(listing(&list, dir.path()), expected, "{name} listing");
    }
}

/// A root with `train/` class folders and a flat `val/` holding the val images.
fn flat_val_root(root: &Path) -> Vec<(String, String)> {
    build_tree(root);
    let mut moved = Vec::new();
    for wnid_dir in fs::read_dir(root.join("val")).unwrap() {
        let wnid_dir = wnid_dir.unwrap().path();
        for file in fs::read_dir(&wnid_dir).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            fs::rename(&file, root.join("val").join(&name)).unwrap();
            moved.push((
                name,
                wnid_dir.file_name().unwrap().to_string_lossy().to_string(),
            ));
        }
        fs::remove_dir(&wnid_dir).unwrap();
    }
    moved.sort();
    moved
}

fn labels_by_name(list: &ImageList) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .entries()
        .iter()
        .map(|e| {
            let name = e.path.file_name().unwrap().to_string_lossy().to_string();
            (name, list.classes().wnid(e.label).unwrap().to_string())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn flat_val_is_labelled_by_kaggle_csv() {
    let dir = tempfile::tempdir().unwrap();
    let truth = flat_val_root(dir.path());
    let mut csv = String::from("ImageId,PredictionString\n");
    for (name, wnid) in &truth {
        let id = name.split('.').next().unwrap();
        csv += &format!("{id},{wnid} 10 20 30 40 {wnid} 1 2 3 4\n");
    }
    // A label for an image that is not in the folder is ignored.
    csv += "ILSVRC2012_val_00049999,n01443537 1 2 3 4\n";
    fs::write(dir.path().join("LOC_val_solution.csv"), csv).unwrap();
    // Found in the root without being named.
    let list = open_imagenet(dir.path(), ImageNetSplit::Val, &ImageNetOptions::default()).unwrap();
    assert_eq!(labels_by_name(&list), truth);
    // Listed in file-name order.
    let names: Vec<_> = list
        .entries()
        .iter()
        .map(|e| e.path.file_name().unwrap().to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn flat_val_is_labelled_by_caffe_val_txt_with_indices_or_wnids() {
    let dir = tempfile::tempdir().unwrap();
    let truth = flat_val_root(dir.path());
    let classes = ClassIndex::from_folders(&dir.path().join("train")).unwrap();
    let by_index: String = truth
        .iter()
        .map(|(name, wnid)| format!("{name} {}\n", classes.label(wnid).unwrap()))
        .collect();
    let by_wnid: String = truth
        .iter()
        .map(|(name, wnid)| format!("{name} {wnid}\r\n"))
        .collect();
    for (file, text) in [("val.txt", by_index), ("labels_wnid.txt", by_wnid)] {
        let path = dir.path().join(file);
        fs::write(&path, text).unwrap();
        let options = ImageNetOptions {
            val_labels: Some(path),
            ..Default::default()
        };
        let list = open_imagenet(dir.path(), ImageNetSplit::Val, &options).unwrap();
        assert_eq!(labels_by_name(&list), truth, "{file}");
    }
}

#[test]
fn flat_val_image_without_label_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let truth = flat_val_root(dir.path());
    let text: String = truth[1..]
        .iter()
        .map(|(n, w)| format!("{n} {w}\n"))
        .collect();
    fs::write(dir.path().join("val.txt"), text).unwrap();
    let err =
        open_imagenet(dir.path(), ImageNetSplit::Val, &ImageNetOptions::default()).unwrap_err();
    assert!(
        matches!(&err, DataError::Unlabelled { image, .. } if image.ends_with(&truth[0].0)),
        "{err}"
    );
    // A label naming an unknown class is reported with its line.
    fs::write(
        dir.path().join("val.txt"),
        "ILSVRC2012_val_00000001.JPEG n99999999\n",
    )
    .unwrap();
    let err =
        open_imagenet(dir.path(), ImageNetSplit::Val, &ImageNetOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::BadLine { line: 1, .. }), "{err}");
}

#[test]
fn class_index_files_fix_the_label_order() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let reversed = ["n02102040", "n01443537", "n01440764"];
    let txt = dir.path().join("synsets.txt");
    // Kaggle's LOC_synset_mapping.txt style: the WordNet id, then a description.
    let text: String = reversed
        .iter()
        .map(|w| format!("{w} some words, here\n"))
        .collect();
    fs::write(&txt, text).unwrap();
    let json = dir.path().join("map.json");
    fs::write(&json, r#"{"n01440764": 2, "n01443537": 1, "n02102040": 0}"#).unwrap();
    for file in [txt, json] {
        let options = ImageNetOptions {
            class_index: Some(file.clone()),
            ..Default::default()
        };
        let list = open_imagenet(dir.path(), ImageNetSplit::Val, &options).unwrap();
        assert_eq!(
            list.classes().wnids(),
            reversed.map(String::from).as_slice()
        );
        for e in list.entries() {
            let folder = e
                .path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(
                list.classes().wnid(e.label),
                Some(folder),
                "{}",
                file.display()
            );
        }
    }
    // A class folder missing from the index is an error naming the folder.
    let short = dir.path().join("short.txt");
    fs::write(&short, "n01440764\nn01443537\n").unwrap();
    let options = ImageNetOptions {
        class_index: Some(short),
        ..Default::default()
    };
    let err = open_imagenet(dir.path(), ImageNetSplit::Val, &options).unwrap_err();
    assert!(
        matches!(&err, DataError::UnknownClass { wnid, .. } if wnid == "n02102040"),
        "{err}"
    );
}

#[test]
fn subset_file_in_robustbench_format_selects_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    // RobustBench's format: `wnid/file` per line, no trailing newline.
    let subset = dir.path().join("imagenet_test_image_ids.txt");
    fs::write(
        &subset,
        "n02102040/ILSVRC2012_val_00000003.JPEG\nn01440764/ILSVRC2012_val_00000293.JPEG\n\
         n01443537/ILSVRC2012_val_00000262.JPEG",
    )
    .unwrap();
    let options = ImageNetOptions {
        subset: Some(subset.clone()),
        ..Default::default()
    };
    let folders = open_imagenet(dir.path(), ImageNetSplit::Val, &options).unwrap();
    let got: Vec<(String, usize)> = folders
        .entries()
        .iter()
        .map(|e| {
            (
                e.path.file_name().unwrap().to_string_lossy().to_string(),
                e.label,
            )
        })
        .collect();
    let want = [
        ("ILSVRC2012_val_00000003.JPEG", 2),
        ("ILSVRC2012_val_00000293.JPEG", 0),
        ("ILSVRC2012_val_00000262.JPEG", 1),
    ];
    assert_eq!(got, want.map(|(n, l)| (n.to_string(), l)));
    // The same subset over a flat val/ labelled by a CSV.
    let truth = {
        let flat = tempfile::tempdir().unwrap();
        let truth = flat_val_root(flat.path());
        let csv: String = truth
            .iter()
            .map(|(n, w)| format!("{},{w} 0 0 1 1\n", n.split('.').next().unwrap()))
            .collect();
        fs::write(
            flat.path().join("LOC_val_solution.csv"),
            format!("ImageId,PredictionString\n{csv}"),
        )
        .unwrap();
        let list = open_imagenet(flat.path(), ImageNetSplit::Val, &options).unwrap();
        let got: Vec<usize> = list.entries().iter().map(|e| e.label).collect();
        assert_eq!(got, [2, 0, 1]);
        truth
    };
    assert_eq!(truth.len(), 6);
    // A class that disagrees with the image's label, a missing image, a repeat: errors with
    // the line number.
    for (text, line) in [
        ("n01440764/ILSVRC2012_val_00000003.JPEG", 1),
        (
            "n01440764/ILSVRC2012_val_00000293.JPEG\nILSVRC2012_val_00000404.JPEG",
            2,
        ),
        (
            "ILSVRC2012_val_00000293.JPEG\r\n\r\nILSVRC2012_val_00000293.JPEG\r\n",
            3,
        ),
    ] {
        fs::write(&subset, text).unwrap();
        let err = open_imagenet(dir.path(), ImageNetSplit::Val, &options).unwrap_err();
        assert!(
            matches!(err, DataError::BadLine { line: l, .. } if l == line),
            "{text}: {err}"
        );
    }
}
