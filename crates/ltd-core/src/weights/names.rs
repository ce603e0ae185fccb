//! PyTorch state-dict names ↔ our parameter paths.
//!
//! Import tolerates what real checkpoints carry beside the weights — a top-level `state_dict`,
//! `module.`/`model.` prefixes, `num_batches_tracked`, the unused `sub_block1.*` of the TRADES
//! WideResNet — and renames the rest to our modules.

use std::collections::HashSet;

/// Containers whose contents are the state dict when a file wraps it.
const STATE_DICT_KEYS: [&str; 2] = ["state_dict", "model_state_dict"];
/// Prefixes added by `DataParallel` (`module.`) and by wrappers such as RobustBench's (`model.`).
const WRAPPER_PREFIXES: [&str; 2] = ["module.", "model."];
/// PyTorch names that are not Rust field names, and ours: the WideResNet shortcut,
/// torchvision's `nn.Sequential` shortcut and the CIFAR ResNets' (`shortcut.0` a convolution,
/// `shortcut.1` a BatchNorm when present; DeepMind's bare `shortcut` convolution is unaffected).
pub const RENAMES: [(&str, &str); 5] = [
    (".convShortcut.", ".conv_shortcut."),
    (".downsample.0.", ".downsample.conv."),
    (".downsample.1.", ".downsample.bn."),
    (".shortcut.0.", ".shortcut.conv."),
    (".shortcut.1.", ".shortcut.bn."),
];

/// The state-dict names of a file's tensors: unwrapped, without prefixes and without the
/// tolerated extras. Returns `(index into names, PyTorch name)` for the tensors to import.
pub fn state_dict_names(names: &[String]) -> Vec<(usize, String)> {
    let wrapped = STATE_DICT_KEYS.iter().find(|container| {
        names
            .iter()
            .any(|n| n.starts_with(&format!("{container}.")))
    });
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let mut name = name.as_str();
            if let Some(container) = wrapped {
                name = name.strip_prefix(&format!("{container}."))?;
            }
            while let Some(rest) = WRAPPER_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
                name = rest;
            }
            let tolerated =
                name.ends_with("num_batches_tracked") || name.starts_with("sub_block1.");
            (!tolerated).then(|| (i, name.to_string()))
        })
        .collect()
}

/// Our parameter paths for PyTorch names. A BatchNorm is whatever has running statistics; its
/// `weight`/`bias` are our `gamma`/`beta`.
pub fn to_paths(torch_names: &[&str]) -> Vec<String> {
    let batch_norms: HashSet<&str> = torch_names
        .iter()
        .filter_map(|name| name.strip_suffix(".running_mean"))
        .collect();
    torch_names
        .iter()
        .map(|&name| {
            let mut name = name.to_string();
            if let Some((module, param)) = name.rsplit_once('.') {
                if batch_norms.contains(module) {
                    match param {
                        "weight" => name = format!("{module}.gamma"),
                        "bias" => name = format!("{module}.beta"),
                        _ => {}
                    }
                }
            }
            let mut name = format!(".{name}");
            for (torch, ours) in RENAMES {
                name = name.replace(torch, ours);
            }
            name[1..].to_string()
        })
        .collect()
}

/// The PyTorch name of one of our parameter paths (for error messages).
pub fn torch_name(path: &str) -> String {
    let mut name = format!(".{path}");
    for (torch, ours) in RENAMES {
        name = name.replace(ours, torch);
    }
    for (ours, torch) in [(".gamma", ".weight"), (".beta", ".bias")] {
        if let Some(stem) = name.strip_suffix(ours) {
            name = format!("{stem}{torch}");
        }
    }
    name[1..].to_string()
}
