//! The Python objects a checkpoint's pickle may build, and nothing else: plain data, `OrderedDict`,
//! torch storages and the tensors rebuilt from them.
//!
//! Objects live in one arena and refer to each other by index, so shared and even cyclic
//! references cost no copies and dropping them never recurses. Every global a pickle names is
//! checked against [`resolve`] when it is named, whichever opcode later uses it.

use std::collections::HashSet;

use super::tensor::{DType, View};

/// Index of an object in the [`Heap`].
pub type Id = usize;

/// Deepest nesting of containers accepted (state dicts nest a few levels).
pub const MAX_DEPTH: u32 = 100;
/// Most objects one pickle may build.
pub const MAX_OBJECTS: usize = 1 << 22;

/// `torch.float32` and friends, which training metadata may hold.
const TORCH_DTYPES: [&str; 12] = [
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool", "double", "half",
];

/// A callable or class a pickle may reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor` and `_rebuild_tensor_v2`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter` and `_rebuild_parameter_with_state`.
    RebuildParameter,
    /// `torch.FloatStorage` and friends, as named in persistent ids.
    StorageClass(DType),
    /// Values in training metadata — numpy scalars, dtypes and arrays, `_codecs.encode`,
    /// `torch.device`, `torch.Size`, torch dtypes, sets — kept opaque: building them runs nothing
    /// here, and weights never come from them.
    PlainData,
}

/// Resolves a global by name, refusing anything that is not on the allow-list.
pub fn resolve(module: &str, name: &str) -> Result<Global, String> {
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Global::RebuildParameter
        }
        ("torch", storage) if DType::from_torch_storage(storage).is_some() => {
            Global::StorageClass(DType::from_torch_storage(storage).expect("checked"))
        }
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar" | "_reconstruct")
        | ("numpy", "dtype" | "ndarray")
        | ("_codecs", "encode")
        | ("torch", "device" | "Size")
        | ("builtins" | "__builtin__", "set" | "frozenset" | "bytearray" | "complex" | "slice") => {
            Global::PlainData
        }
        ("torch", dtype) if TORCH_DTYPES.contains(&dtype) => Global::PlainData,
        _ => {
            return Err(format!(
                "it references `{module}.{name}`, which is not a tensor or plain data; \
                 refusing to load it"
            ))
        }
    })
}

/// A storage named by a persistent id: its bytes lie elsewhere in the file, under `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Storage {
    /// Name of its data (a zip member `data/<key>`, or a key of the legacy format).
    pub key: String,
    /// Element type.
    pub dtype: DType,
    /// Number of elements the file declares for it.
    pub numel: usize,
}

/// A tensor: a view into a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// Where its data lies.
    pub storage: Storage,
    /// Which elements of the storage it holds.
    pub view: View,
}

/// One object built by a pickle.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Object {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, little-endian two's complement.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global(Global),
    Storage(Storage),
    Tensor(TensorRef),
    /// Plain data not needed for weights (bytes, sets, numpy scalars, …).
    Opaque,
}

/// All objects of one pickle, with each one's container nesting depth.
#[derive(Default, Debug)]
pub struct Heap {
    objects: Vec<Object>,
    depth: Vec<u32>,
}

impl Heap {
    /// Adds an object; its depth is one more than its deepest element's.
    pub fn add(&mut self, object: Object) -> Result<Id, String> {
        if self.objects.len() >= MAX_OBJECTS {
            return Err(format!("the pickle builds more than {MAX_OBJECTS} objects"));
        }
        let children: &[Id] = match &object {
            Object::List(items) | Object::Tuple(items) => items,
            _ => &[],
        };
        let mut depth = children.iter().map(|&c| self.depth[c] + 1).max();
        if let Object::Dict(pairs) = &object {
            depth = pairs.iter().map(|&(_, v)| self.depth[v] + 1).max();
        }
        let depth = depth.unwrap_or(0);
        check_depth(depth)?;
        self.objects.push(object);
        self.depth.push(depth);
        Ok(self.objects.len() - 1)
    }

    /// The object at `id`.
    pub fn get(&self, id: Id) -> &Object {
        &self.objects[id]
    }

    /// Appends `items` to the list at `list` (ignored for opaque objects such as sets).
    pub fn extend(&mut self, list: Id, items: Vec<Id>) -> Result<(), String> {
        let deepest = items.iter().map(|&c| self.depth[c] + 1).max().unwrap_or(0);
        match &mut self.objects[list] {
            Object::List(existing) => existing.extend(items),
            Object::Opaque => return Ok(()),
            other => return Err(format!("it appends to a {}", kind(other))),
        }
        self.deepen(list, deepest)
    }

    /// Sets `pairs` in the dict at `dict` (ignored for opaque objects).
    pub fn set_items(&mut self, dict: Id, pairs: Vec<(Id, Id)>) -> Result<(), String> {
        let deepest = pairs
            .iter()
            .map(|&(_, v)| self.depth[v] + 1)
            .max()
            .unwrap_or(0);
        match &mut self.objects[dict] {
            Object::Dict(existing) => existing.extend(pairs),
            Object::Opaque => return Ok(()),
            other => return Err(format!("it sets items on a {}", kind(other))),
        }
        self.deepen(dict, deepest)
    }

    fn deepen(&mut self, id: Id, depth: u32) -> Result<(), String> {
        check_depth(depth)?;
        self.depth[id] = self.depth[id].max(depth);
        Ok(())
    }

    /// What calling `func` with `args` builds — by REDUCE, NEWOBJ, INST or OBJ alike.
    pub fn call(&self, func: Id, args: &[Id]) -> Result<Object, String> {
        let Object::Global(global) = self.get(func) else {
            return Err(format!("it calls a {}", kind(self.get(func))));
        };
        match global {
            Global::OrderedDict => self.ordered_dict(args),
            Global::RebuildTensor => self.rebuild_tensor(args),
            Global::RebuildParameter => match args.first().map(|&a| self.get(a)) {
                Some(tensor @ Object::Tensor(_)) => Ok(tensor.clone()),
                _ => Err("it rebuilds a parameter from something that is not a tensor".into()),
            },
            Global::StorageClass(_) => Err("it calls a storage class".into()),
            Global::PlainData => Ok(Object::Opaque),
        }
    }

    fn ordered_dict(&self, args: &[Id]) -> Result<Object, String> {
        let Some(&items) = args.first() else {
            return Ok(Object::Dict(Vec::new()));
        };
        let (Object::List(items) | Object::Tuple(items)) = self.get(items) else {
            return Err("it builds an OrderedDict from something that is not a list".into());
        };
        let pair = |&item: &Id| match self.get(item) {
            Object::List(kv) | Object::Tuple(kv) if kv.len() == 2 => Ok((kv[0], kv[1])),
            _ => Err("it builds an OrderedDict from something that is not pairs".to_string()),
        };
        Ok(Object::Dict(
            items.iter().map(pair).collect::<Result<_, _>>()?,
        ))
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, …)`: the trailing
    /// `requires_grad`, backward hooks and metadata do not change the values.
    fn rebuild_tensor(&self, args: &[Id]) -> Result<Object, String> {
        let bad = || "it rebuilds a tensor from malformed arguments".to_string();
        let [storage, offset, size, stride, ..] = args else {
            return Err(bad());
        };
        let Object::Storage(storage) = self.get(*storage) else {
            return Err(bad());
        };
        let view = View {
            shape: self.usizes(*size).ok_or_else(bad)?,
            stride: self.usizes(*stride).ok_or_else(bad)?,
            offset: self.usize(*offset).ok_or_else(bad)?,
        };
        Ok(Object::Tensor(TensorRef {
            storage: storage.clone(),
            view,
        }))
    }

    /// torch's persistent id of a storage: `('storage', torch.FloatStorage, key, location,
    /// numel[, view_metadata])`.
    pub fn persistent_load(&self, pid: Id) -> Result<Object, String> {
        let bad = || "it holds a persistent id that is not a torch storage".to_string();
        let Object::Tuple(parts) = self.get(pid) else {
            return Err(bad());
        };
        let (tag, class, key, numel) = match parts.as_slice() {
            [tag, class, key, _location, numel] => (tag, class, key, numel),
            [tag, class, key, _location, numel, view] if *self.get(*view) == Object::None => {
                (tag, class, key, numel)
            }
            _ => return Err(bad()),
        };
        let (Object::Str(tag), Object::Global(Global::StorageClass(dtype))) =
            (self.get(*tag), self.get(*class))
        else {
            return Err(bad());
        };
        let key = match self.get(*key) {
            Object::Str(key) => key.clone(),
            Object::Int(key) => key.to_string(),
            _ => return Err(bad()),
        };
        if tag != "storage" {
            return Err(bad());
        }
        let numel = self.usize(*numel).ok_or_else(bad)?;
        Ok(Object::Storage(Storage {
            key,
            dtype: *dtype,
            numel,
        }))
    }

    /// A non-negative integer.
    pub fn usize(&self, id: Id) -> Option<usize> {
        match self.get(id) {
            Object::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }

    fn usizes(&self, id: Id) -> Option<Vec<usize>> {
        match self.get(id) {
            Object::Tuple(items) | Object::List(items) => {
                items.iter().map(|&i| self.usize(i)).collect()
            }
            _ => None,
        }
    }

    /// Every tensor reachable from `root` through dicts, named by its keys joined with `.`
    /// (torch's state-dict names). Other values are metadata and skipped. Each object is expanded
    /// a bounded number of times, so a memo that doubles a dict many times over cannot make the
    /// walk exponential.
    pub fn named_tensors(&self, root: Id) -> Result<Vec<(String, TensorRef)>, String> {
        if !matches!(self.get(root), Object::Dict(_)) {
            return Err(format!(
                "it holds a {}, not a state dict",
                kind(self.get(root))
            ));
        }
        let mut budget = self.objects.len() + 4096;
        let mut found = Vec::new();
        let mut names = HashSet::new();
        let mut pending = vec![(root, String::new())];
        while let Some((id, prefix)) = pending.pop() {
            let Object::Dict(pairs) = self.get(id) else {
                continue;
            };
            for &(key, value) in pairs.iter().rev() {
                budget = budget.checked_sub(1).ok_or_else(|| {
                    "its dicts refer to each other too often (a memo bomb?)".to_string()
                })?;
                let key = match self.get(key) {
                    Object::Str(s) => s.clone(),
                    Object::Int(i) => i.to_string(),
                    _ => continue,
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                match self.get(value) {
                    Object::Dict(_) => pending.push((value, name)),
                    Object::Tensor(tensor) => {
                        if !names.insert(name.clone()) {
                            return Err(format!("it holds `{name}` twice"));
                        }
                        found.push((name, tensor.clone()));
                    }
                    _ => {}
                }
            }
        }
        found.reverse();
        Ok(found)
    }
}

fn check_depth(depth: u32) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "its containers nest deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(())
}

/// A short name of an object's kind, for messages.
pub fn kind(object: &Object) -> &'static str {
    match object {
        Object::None => "None",
        Object::Bool(_) => "bool",
        Object::Int(_) | Object::BigInt(_) => "int",
        Object::Float(_) => "float",
        Object::Str(_) => "str",
        Object::List(_) => "list",
        Object::Tuple(_) => "tuple",
        Object::Dict(_) => "dict",
        Object::Global(_) => "class or function",
        Object::Storage(_) => "storage",
        Object::Tensor(_) => "tensor",
        Object::Opaque => "non-weight object",
    }
}
