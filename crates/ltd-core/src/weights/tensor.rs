//! Tensors as a checkpoint stores them, checked against their storage before a single element is
//! read, and decoded into f32 host tensors.
//!
//! Geometry follows `torch.load`: element `(i₀, …, iₙ)` of a view lies at
//! `offset + Σ iₖ·strideₖ` of its storage, counted in elements.

/// Element types found in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 | Self::U64 => 8,
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F16 | Self::BF16 | Self::I16 | Self::U16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// Whether the values can be a float parameter.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F64 | Self::F32 | Self::F16 | Self::BF16)
    }

    /// PyTorch's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::F64 => "float64",
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::I64 => "int64",
            Self::I32 => "int32",
            Self::I16 => "int16",
            Self::I8 => "int8",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
            Self::Bool => "bool",
        }
    }

    /// The dtype of a `torch.*Storage` class, as `torch.save` names it in a persistent id.
    pub fn from_torch_storage(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// The dtype of a safetensors header entry.
    pub fn from_safetensors(name: &str) -> Option<Self> {
        Some(match name {
            "F64" => Self::F64,
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "I16" => Self::I16,
            "I8" => Self::I8,
            "U8" => Self::U8,
            "U16" => Self::U16,
            "U32" => Self::U32,
            "U64" => Self::U64,
            "BOOL" => Self::Bool,
            _ => return None,
        })
    }

    /// Decodes one little-endian element (`bytes.len() == self.size()`) of a float dtype.
    fn decode(self, bytes: &[u8]) -> f32 {
        match self {
            Self::F64 => f64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32,
            Self::F32 => f32::from_le_bytes(bytes.try_into().expect("4 bytes")),
            Self::F16 => half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
            Self::BF16 => half::bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
            _ => unreachable!("only float dtypes are decoded"),
        }
    }
}

/// Where a tensor's elements lie in its storage, in elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Size of each dimension.
    pub shape: Vec<usize>,
    /// Step between neighbours along each dimension.
    pub stride: Vec<usize>,
    /// First element.
    pub offset: usize,
}

impl View {
    /// A row-major view of a whole storage.
    pub fn contiguous(shape: Vec<usize>) -> Self {
        let mut stride = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1].max(1);
        }
        Self {
            shape,
            stride,
            offset: 0,
        }
    }

    /// Number of elements, or why it cannot be counted.
    pub fn numel(&self) -> Result<usize, String> {
        self.shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("its shape {:?} overflows", self.shape))
    }

    /// Checks that the view lies inside a storage of `storage_len` elements and declares no more
    /// elements than the storage holds (so a tiny file cannot declare a huge tensor); returns the
    /// number of elements.
    pub fn check(&self, storage_len: usize) -> Result<usize, String> {
        if self.shape.len() != self.stride.len() {
            return Err(format!(
                "its shape {:?} and stride {:?} differ in rank",
                self.shape, self.stride
            ));
        }
        let numel = self.numel()?;
        if numel == 0 {
            return Ok(0);
        }
        if numel > storage_len {
            return Err(format!(
                "its shape {:?} declares {numel} elements but its storage holds {storage_len}",
                self.shape
            ));
        }
        let last = self
            .shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |end, (&n, &s)| {
                (n - 1)
                    .checked_mul(s)
                    .and_then(|step| end.checked_add(step))
            });
        match last {
            Some(last) if last < storage_len => Ok(numel),
            _ => Err(format!(
                "its view (offset {}, shape {:?}, stride {:?}) reaches past the end of its \
                 storage of {storage_len} elements",
                self.offset, self.shape, self.stride
            )),
        }
    }

    fn is_row_major(&self) -> bool {
        let contiguous = Self::contiguous(self.shape.clone());
        self.shape
            .iter()
            .zip(self.stride.iter().zip(&contiguous.stride))
            .all(|(&n, (&s, &c))| n <= 1 || s == c)
    }
}

/// A validated f32 tensor on the host, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Size of each dimension.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub values: Vec<f32>,
}

/// A tensor as read from a checkpoint: its dtype and shape, and its values converted to f32 when
/// the dtype is a float one (integer tensors such as `num_batches_tracked` are never decoded).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    /// The dtype in the file.
    pub dtype: DType,
    /// The tensor (values empty unless `dtype.is_float()`).
    pub tensor: HostTensor,
}

/// Decodes the elements of `view` from `storage` (little-endian `dtype` elements); integer
/// tensors keep their shape only. The view is checked against the bytes here too, so no caller's
/// mistake can turn into an out-of-bounds read.
pub fn gather(storage: &[u8], dtype: DType, view: &View) -> Result<StoredTensor, String> {
    let shape = view.shape.clone();
    if !dtype.is_float() {
        let values = Vec::new();
        return Ok(StoredTensor {
            dtype,
            tensor: HostTensor { shape, values },
        });
    }
    let size = dtype.size();
    view.check(storage.len() / size)?;
    let numel: usize = view.shape.iter().product();
    let element = |i: usize| dtype.decode(&storage[i * size..(i + 1) * size]);
    let values = if numel == 0 {
        Vec::new()
    } else if view.is_row_major() {
        (view.offset..view.offset + numel).map(element).collect()
    } else {
        let mut values = Vec::with_capacity(numel);
        let mut index = vec![0usize; shape.len()];
        for _ in 0..numel {
            let at = view.offset
                + index
                    .iter()
                    .zip(&view.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            values.push(element(at));
            // Odometer over the multi-index, last dimension fastest.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        values
    };
    Ok(StoredTensor {
        dtype,
        tensor: HostTensor { shape, values },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn a_transposed_view_is_read_as_torch_does() {
        let storage = f32_bytes(&[0., 1., 2., 3., 4., 5.]); // a 2×3 matrix, row-major
        let view = View {
            shape: vec![3, 2],
            stride: vec![1, 3],
            offset: 0,
        };
        assert_eq!(view.check(6), Ok(6));
        let t = gather(&storage, DType::F32, &view).unwrap().tensor;
        assert_eq!(t.values, vec![0., 3., 1., 4., 2., 5.]);
    }

    #[test]
    fn views_past_their_storage_are_refused() {
        let offset = View {
            offset: 5,
            ..View::contiguous(vec![2])
        };
        assert!(offset.check(6).unwrap_err().contains("past the end"));
        let huge = View::contiguous(vec![1_000_000, 1_000_000]);
        assert!(huge.check(4).unwrap_err().contains("declares"));
        let overflow = View::contiguous(vec![usize::MAX, 3]);
        assert!(overflow.check(4).unwrap_err().contains("overflows"));
    }

    #[test]
    fn half_and_double_become_f32() {
        let h: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let t = gather(&h, DType::BF16, &View::contiguous(vec![2]))
            .unwrap()
            .tensor;
        assert_eq!(t.values, vec![1.5, -2.0]);
        let d: Vec<u8> = 0.25f64.to_le_bytes().to_vec();
        let t = gather(&d, DType::F64, &View::contiguous(vec![1]))
            .unwrap()
            .tensor;
        assert_eq!(t.values, vec![0.25]);
    }
}
