//! `.safetensors` files: an 8-byte little-endian header length, a JSON header mapping names to
//! dtype, shape and byte range, then the data. Every range is checked against the file and
//! against its dtype × shape before it is read.

use std::io::{Read, Seek, SeekFrom};

use super::tensor::{gather, DType, View};
use super::torch::{Budget, Tensors};

/// Largest header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// One header entry: `(name, dtype, shape, start, end)` relative to the data section.
type Entry = (String, DType, Vec<usize>, u64, u64);

/// Reads every tensor of a safetensors file of `len` bytes.
pub fn read<R: Read + Seek>(mut reader: R, len: u64) -> Result<Tensors, String> {
    let mut word = [0u8; 8];
    reader
        .read_exact(&mut word)
        .map_err(|_| "it is too short for a safetensors header")?;
    let header_len = u64::from_le_bytes(word);
    if header_len > MAX_HEADER || header_len > len.saturating_sub(8) {
        return Err(format!(
            "its header length {header_len} does not fit a file of {len} bytes"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    reader
        .read_exact(&mut header)
        .map_err(|e| format!("header: {e}"))?;
    let data_start = 8 + header_len;
    let entries = parse_header(&header, len - data_start)?;
    drop(header);
    let mut budget = Budget::for_file(len);
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, dtype, shape, start, end) in entries {
        let view = View::contiguous(shape);
        if !dtype.is_float() {
            tensors.push((name, gather(&[], dtype, &view)?));
            continue;
        }
        let bytes = (end - start) as usize;
        budget.spend(bytes as u64 * 2, &format!("`{name}`"))?;
        let mut data = vec![0u8; bytes];
        reader
            .seek(SeekFrom::Start(data_start + start))
            .and_then(|_| reader.read_exact(&mut data))
            .map_err(|e| format!("`{name}`: {e}"))?;
        let stored = gather(&data, dtype, &view).map_err(|e| format!("`{name}`: {e}"))?;
        tensors.push((name, stored));
    }
    Ok(tensors)
}

/// Parses and checks the header against a data section of `data_len` bytes.
fn parse_header(header: &[u8], data_len: u64) -> Result<Vec<Entry>, String> {
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("its header is not valid: {e}"))?;
    let mut entries = Vec::with_capacity(header.len());
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("`{name}`: {what}");
        let dtype = info["dtype"].as_str().ok_or_else(|| bad("no dtype"))?;
        let dtype = DType::from_safetensors(dtype)
            .ok_or_else(|| bad(&format!("unsupported dtype {dtype}")))?;
        let shape = info["shape"]
            .as_array()
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad("a malformed shape"))?;
        let offsets = info["data_offsets"]
            .as_array()
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
        let (start, end) = offsets.ok_or_else(|| bad("malformed data_offsets"))?;
        if start > end || end > data_len {
            return Err(bad(&format!(
                "its bytes {start}..{end} lie outside the {data_len} bytes of data"
            )));
        }
        let numel = View::contiguous(shape.clone())
            .numel()
            .map_err(|e| bad(&e))?;
        let needed = (numel as u128) * dtype.size() as u128;
        if needed != (end - start) as u128 {
            return Err(bad(&format!(
                "its shape {shape:?} of {} needs {needed} bytes but it has {}",
                dtype.name(),
                end - start
            )));
        }
        entries.push((name, dtype, shape, start, end));
    }
    Ok(entries)
}
