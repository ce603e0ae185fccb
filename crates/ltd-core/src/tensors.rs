//! Host ↔ device: batches from `ltd-data` up to backend tensors, values back down.
//!
//! Read-backs never guess. Backends store the same tensor kind in different element types —
//! CubeCL backends (wgpu, CUDA) return bools as `u8`/`u32` and ints as `i32`, Flex returns native
//! bools and `i64` — so `to_vec::<bool>()` that works on one backend is an `Err` on another.
//! Every read-back in the library goes through this module, which accepts each storage a backend
//! may use for the kind asked for and turns anything else into an error.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, BoolStore, DType, Int, Tensor, TensorData};
use ltd_data::Batch;

use crate::{LtdError, Result};

/// Images `[N, C, H, W]` in [0, 1] and labels `[N]` of a batch, on `device`.
pub fn batch_tensors<B: Backend>(
    batch: &Batch,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let images = Tensor::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
    let labels = Tensor::from_data(TensorData::new(labels, [batch.labels.len()]), device);
    (images, labels)
}

/// A bool tensor's values, row-major, whether the backend stores bools natively or as `u8`/`u32`.
pub fn read_bools<B: Backend, const D: usize>(t: Tensor<B, D, Bool>) -> Result<Vec<bool>> {
    bools_of(fetch(t)?)
}

/// A float tensor's values as `f32`, row-major, from any float storage (f16, bf16, f32, f64).
pub fn read_floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    floats_of(fetch(t)?)
}

/// An int tensor's values as `i64`, row-major, from any integer storage.
pub fn read_ints<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Result<Vec<i64>> {
    ints_of(fetch(t)?)
}

/// The value of a one-element float tensor (a loss, a sum).
pub fn read_scalar<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<f64> {
    match read_floats(t)?.as_slice() {
        [v] => Ok(*v as f64),
        values => Err(mismatch(format!(
            "expected one value, the tensor holds {}",
            values.len()
        ))),
    }
}

fn fetch<B: Backend, const D: usize, K: burn::tensor::TensorKind<B>>(
    t: Tensor<B, D, K>,
) -> Result<TensorData>
where
    K: burn::tensor::BasicOps<B>,
{
    t.try_into_data()
        .map_err(|e| LtdError::Device(format!("reading a tensor back failed: {e:?}")))
}

/// Bools from data of any bool storage (or plain `u8`/`u32`, which some backends use for masks).
pub fn bools_of(data: TensorData) -> Result<Vec<bool>> {
    let n = data.num_elements();
    let values: Vec<bool> = match data.dtype {
        DType::Bool(BoolStore::Native) => data.into_vec::<bool>().map_err(data_error)?,
        DType::Bool(BoolStore::U8) | DType::U8 => data.as_bytes().iter().map(|b| *b != 0).collect(),
        DType::Bool(BoolStore::U32) | DType::U32 => data
            .as_bytes()
            .chunks_exact(4)
            .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) != 0)
            .collect(),
        other => return Err(mismatch(format!("expected a bool tensor, got {other:?}"))),
    };
    check_len(values, n)
}

/// `f32`s from data of any float storage.
pub fn floats_of(data: TensorData) -> Result<Vec<f32>> {
    let n = data.num_elements();
    match data.dtype {
        DType::F64 | DType::F32 | DType::Flex32 | DType::F16 | DType::BF16 => {}
        other => return Err(mismatch(format!("expected a float tensor, got {other:?}"))),
    }
    check_len(data.convert::<f32>().into_vec().map_err(data_error)?, n)
}

/// `i64`s from data of any integer storage.
pub fn ints_of(data: TensorData) -> Result<Vec<i64>> {
    let n = data.num_elements();
    match data.dtype {
        DType::I64
        | DType::I32
        | DType::I16
        | DType::I8
        | DType::U64
        | DType::U32
        | DType::U16
        | DType::U8 => {}
        other => return Err(mismatch(format!("expected an int tensor, got {other:?}"))),
    }
    check_len(data.convert::<i64>().into_vec().map_err(data_error)?, n)
}

fn check_len<T>(values: Vec<T>, n: usize) -> Result<Vec<T>> {
    if values.len() == n {
        Ok(values)
    } else {
        Err(mismatch(format!(
            "{} values read back for a tensor of {n} elements",
            values.len()
        )))
    }
}

fn mismatch(what: String) -> LtdError {
    LtdError::Device(format!("unexpected read-back: {what}"))
}

fn data_error(e: burn::tensor::DataError) -> LtdError {
    mismatch(format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_dtype(values: Vec<u32>, dtype: DType) -> TensorData {
        let n = values.len();
        let mut data = TensorData::new(values, [n]);
        data.dtype = dtype;
        data
    }

    #[test]
    fn bools_from_every_storage() {
        let expected = vec![true, false, true];
        assert_eq!(
            bools_of(TensorData::new(expected.clone(), [3])).unwrap(),
            expected
        );
        assert_eq!(
            bools_of(TensorData::new(vec![1u8, 0, 7], [3])).unwrap(),
            expected
        );
        let mut u8s = TensorData::new(vec![1u8, 0, 1], [3]);
        u8s.dtype = DType::Bool(BoolStore::U8);
        assert_eq!(bools_of(u8s).unwrap(), expected);
        let u32s = as_dtype(vec![1, 0, 1 << 20], DType::Bool(BoolStore::U32));
        assert_eq!(bools_of(u32s).unwrap(), expected);
        assert_eq!(
            bools_of(as_dtype(vec![1, 0, 2], DType::U32)).unwrap(),
            expected
        );
        let floats = TensorData::new(vec![1.0f32, 0.0, 1.0], [3]);
        assert!(bools_of(floats).is_err());
    }

    #[test]
    fn floats_and_ints_from_every_width() {
        let halves = TensorData::new(vec![burn::tensor::f16::from_f32(0.5); 2], [2]);
        assert_eq!(floats_of(halves).unwrap(), vec![0.5, 0.5]);
        let doubles = TensorData::new(vec![0.25f64, -1.0], [2]);
        assert_eq!(floats_of(doubles).unwrap(), vec![0.25, -1.0]);
        assert!(floats_of(TensorData::new(vec![1i32, 2], [2])).is_err());
        assert_eq!(
            ints_of(TensorData::new(vec![3i32, -4], [2])).unwrap(),
            vec![3, -4]
        );
        assert_eq!(
            ints_of(TensorData::new(vec![3i64, -4], [2])).unwrap(),
            vec![3, -4]
        );
        assert!(ints_of(TensorData::new(vec![true], [1])).is_err());
    }

    #[test]
    fn a_short_buffer_is_an_error() {
        let mut data = TensorData::new(vec![1u8, 0], [2]);
        data.shape = vec![3].into();
        assert!(bools_of(data).is_err());
    }
}
