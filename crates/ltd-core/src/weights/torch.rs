//! `torch.save` containers: the zip format (torch ≥ 1.6: `<archive>/data.pkl` plus one member
//! `<archive>/data/<key>` per storage) and the legacy format (pickles back to back, then each
//! storage as an 8-byte element count and raw bytes).
//!
//! Every storage is found and its size checked against its dtype and declared length, and every
//! view against its storage, before any element is read. Bytes read (decompressed) plus f32 values
//! produced are bounded by a multiple of the file's size, so a deflate bomb or a tiny file that
//! declares huge tensors ends in an error instead of exhausting memory.

use std::collections::HashMap;
use std::io::{Read, Seek};

use super::objects::{Object, TensorRef};
use super::pickle;
use super::tensor::{gather, StoredTensor};

/// Bytes read and produced may reach this multiple of the file's size (plus [`SLACK`]): enough
/// for f16 weights becoming f32 and a few tied tensors, far from what a bomb needs.
pub const MAX_EXPANSION: u64 = 8;
/// Allowance independent of the file's size.
pub const SLACK: u64 = 1 << 20;

/// The magic number `torch.save` pickles first in the legacy format, little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Tensors of a checkpoint, by state-dict name.
pub type Tensors = Vec<(String, StoredTensor)>;

/// What may still be read or produced from one file.
pub struct Budget(u64);

impl Budget {
    /// The budget for a file of `len` bytes.
    pub fn for_file(len: u64) -> Self {
        Self(len.saturating_mul(MAX_EXPANSION).saturating_add(SLACK))
    }

    /// Takes `bytes` from the budget, or says why it cannot.
    pub fn spend(&mut self, bytes: u64, what: &str) -> Result<(), String> {
        self.0 = self.0.checked_sub(bytes).ok_or_else(|| {
            format!(
                "{what} would take more than {MAX_EXPANSION}× the file's size in memory \
                 (a decompression bomb or a forged size?)"
            )
        })?;
        Ok(())
    }
}

/// Reads a `.pt` of either format; `len` is the file's size.
pub fn read<R: Read + Seek>(mut reader: R, len: u64) -> Result<Tensors, String> {
    let mut head = [0u8; 4];
    let is_zip = reader.read_exact(&mut head).is_ok() && head == *b"PK\x03\x04";
    reader.rewind().map_err(|e| e.to_string())?;
    if is_zip {
        return read_zip(reader, len);
    }
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    read_legacy(&bytes)
}

/// The zip format.
pub fn read_zip<R: Read + Seek>(reader: R, len: u64) -> Result<Tensors, String> {
    let mut budget = Budget::for_file(len);
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("unreadable zip: {e}"))?;
    let pickle_name = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| n.len())
        .map(str::to_string)
        .ok_or("the archive has no data.pkl (not a torch.save file)")?;
    let prefix = &pickle_name[..pickle_name.len() - "data.pkl".len()];
    if zip.file_names().any(|n| n == format!("{prefix}byteorder")) {
        let order = read_member(&mut zip, &format!("{prefix}byteorder"), &mut budget)?;
        if order.trim_ascii() != b"little" {
            return Err("it was saved big-endian, which is not supported".into());
        }
    }
    let data = read_member(&mut zip, &pickle_name, &mut budget)?;
    let pickle = pickle::parse(&data).map_err(|e| format!("{pickle_name}: {e}"))?;
    let named = pickle.heap.named_tensors(pickle.root)?;
    drop(pickle);
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(named.len());
    for (name, tensor) in named {
        let member = format!("{prefix}data/{}", tensor.storage.key);
        let needed = storage_bytes(&name, &tensor)?;
        let size = zip
            .by_name(&member)
            .map_err(|_| format!("`{name}`: its storage `{member}` is missing from the archive"))?
            .size();
        if size != needed as u64 {
            return Err(format!(
                "`{name}`: its storage `{member}` holds {size} bytes but {} × {} needs {needed}",
                tensor.storage.numel,
                tensor.storage.dtype.name()
            ));
        }
        check_view(&name, &tensor)?;
        if !tensor.storage.dtype.is_float() {
            tensors.push((name, gather(&[], tensor.storage.dtype, &tensor.view)?));
            continue; // never read
        }
        if !storages.contains_key(&member) {
            let bytes = read_member(&mut zip, &member, &mut budget)?;
            storages.insert(member.clone(), bytes);
        }
        tensors.push((
            name.clone(),
            decode(&name, &storages[&member], &tensor, &mut budget)?,
        ));
    }
    Ok(tensors)
}

/// Reads one member, at most as many bytes as its header declares and the budget allows.
fn read_member<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    budget: &mut Budget,
) -> Result<Vec<u8>, String> {
    let file = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let size = file.size();
    budget.spend(size, &format!("decompressing `{name}`"))?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 != size {
        return Err(format!(
            "`{name}` is truncated: {} of {size} bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// The legacy (non-zip) format: magic number, protocol version, system info, the object, the
/// list of storage keys, then the storages in that order.
pub fn read_legacy(bytes: &[u8]) -> Result<Tensors, String> {
    let not_torch = "it is neither a zip archive nor a legacy torch.save file";
    let magic = pickle::parse(bytes).map_err(|_| not_torch)?;
    if *magic.heap.get(magic.root) != Object::BigInt(LEGACY_MAGIC.to_vec()) {
        return Err(not_torch.into());
    }
    let mut pos = magic.end;
    let mut next = |what: &str| {
        let p = pickle::parse(&bytes[pos..]).map_err(|e| format!("{what}: {e}"))?;
        pos += p.end;
        Ok::<_, String>(p)
    };
    let version = next("protocol version")?;
    if *version.heap.get(version.root) != Object::Int(1001) {
        return Err("unsupported legacy protocol version".into());
    }
    check_little_endian(&next("system info")?)?;
    let main = next("the saved object")?;
    let named = main.heap.named_tensors(main.root)?;
    let keys = next("the storage keys")?;
    let Object::List(key_ids) = keys.heap.get(keys.root) else {
        return Err("the storage key list is not a list".into());
    };
    let dtypes: HashMap<&str, _> = named
        .iter()
        .map(|(_, t)| (t.storage.key.as_str(), t.storage.dtype))
        .collect();
    // Where each storage's bytes lie, with the element count written before them.
    let mut ranges = HashMap::new();
    for &id in key_ids {
        let Object::Str(key) = keys.heap.get(id) else {
            return Err("a storage key is not a string".into());
        };
        let dtype = dtypes.get(key.as_str()).ok_or("a storage no tensor uses")?;
        let count = bytes.get(pos..pos + 8).ok_or("a storage is missing")?;
        let numel = u64::from_le_bytes(count.try_into().expect("8 bytes"));
        let len = numel
            .checked_mul(dtype.size() as u64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= bytes.len() - pos - 8)
            .ok_or_else(|| format!("storage `{key}` is truncated"))?;
        ranges.insert(key.as_str(), (numel, pos + 8..pos + 8 + len));
        pos += 8 + len;
    }
    let mut budget = Budget::for_file(bytes.len() as u64);
    let mut tensors = Vec::with_capacity(named.len());
    for (name, tensor) in named {
        let key = tensor.storage.key.as_str();
        let (numel, range) = ranges
            .get(key)
            .ok_or_else(|| format!("`{name}`: its storage `{key}` is missing"))?;
        if *numel != tensor.storage.numel as u64 {
            return Err(format!(
                "`{name}`: its storage `{key}` holds {numel} elements, not {}",
                tensor.storage.numel
            ));
        }
        // One key may be named with two storage classes; the bytes must fit this one's.
        if range.len() != storage_bytes(&name, &tensor)? {
            return Err(format!(
                "`{name}`: its storage `{key}` is used with two different dtypes"
            ));
        }
        check_view(&name, &tensor)?;
        let stored = decode(&name, &bytes[range.clone()], &tensor, &mut budget)?;
        tensors.push((name, stored));
    }
    Ok(tensors)
}

fn check_little_endian(sys_info: &pickle::Pickle) -> Result<(), String> {
    let heap = &sys_info.heap;
    let Object::Dict(pairs) = heap.get(sys_info.root) else {
        return Err("the system info is not a dict".into());
    };
    let little = pairs.iter().any(|&(k, v)| {
        *heap.get(k) == Object::Str("little_endian".into()) && *heap.get(v) == Object::Bool(true)
    });
    if !little {
        return Err("it was saved big-endian, which is not supported".into());
    }
    Ok(())
}

/// Bytes a tensor's whole storage must have: its element count times its element size.
fn storage_bytes(name: &str, tensor: &TensorRef) -> Result<usize, String> {
    tensor
        .storage
        .numel
        .checked_mul(tensor.storage.dtype.size())
        .ok_or_else(|| format!("`{name}`: its storage declares an impossible length"))
}

fn check_view(name: &str, tensor: &TensorRef) -> Result<(), String> {
    tensor
        .view
        .check(tensor.storage.numel)
        .map(|_| ())
        .map_err(|e| format!("`{name}`: {e}"))
}

/// Decodes a checked view of `storage` (the storage's bytes), charging its f32 values.
fn decode(
    name: &str,
    storage: &[u8],
    tensor: &TensorRef,
    budget: &mut Budget,
) -> Result<StoredTensor, String> {
    let numel = tensor.view.numel()? as u64;
    if tensor.storage.dtype.is_float() {
        budget.spend(numel.saturating_mul(4), &format!("`{name}`"))?;
    }
    gather(storage, tensor.storage.dtype, &tensor.view).map_err(|e| format!("`{name}`: {e}"))
}
