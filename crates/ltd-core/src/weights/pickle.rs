//! A pickle virtual machine that only builds plain data (protocols 0–5).
//!
//! It interprets opcodes in a loop — no recursion on the file's structure — into the [`Heap`],
//! calls nothing, and resolves every global by name through [`objects::resolve`] as soon as it is
//! named (`GLOBAL`, `STACK_GLOBAL`, `INST`), so no opcode (`REDUCE`, `NEWOBJ`, `BUILD`, `OBJ`, a
//! bare reference) can reach a callable outside the allow-list. Stack, marks and memo are bounded.

use std::collections::HashMap;

use super::objects::{self, Heap, Id, Object};

/// Most entries on the value stack (and on the mark stack).
pub const MAX_STACK: usize = 1 << 16;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 18;

/// A finished pickle: the objects it built, its result, and where its `STOP` ended.
#[derive(Debug)]
pub struct Pickle {
    /// Every object built.
    pub heap: Heap,
    /// The unpickled value.
    pub root: Id,
    /// Byte offset just past `STOP` (a legacy `.pt` holds several pickles back to back).
    pub end: usize,
}

/// Runs the pickle at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Pickle, String> {
    let mut vm = Vm {
        bytes,
        pos: 0,
        heap: Heap::default(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let op = vm.u8()?;
        if op == b'.' {
            let root = vm.pop()?;
            return Ok(Pickle {
                heap: vm.heap,
                root,
                end: vm.pos,
            });
        }
        let done = vm.literal(op)? || vm.container(op)? || vm.memo_op(op)? || vm.call(op)?;
        if !done {
            return Err(format!(
                "unsupported pickle opcode 0x{op:02x} at byte {}",
                vm.pos - 1
            ));
        }
    }
}

struct Vm<'a> {
    bytes: &'a [u8],
    pos: usize,
    heap: Heap,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| "the pickle is truncated".to_string())?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian unsigned length of `width` bytes.
    fn len(&mut self, width: usize) -> Result<usize, String> {
        let bytes = self.take(width)?;
        let value = bytes.iter().rev().fold(0u128, |v, &b| (v << 8) | b as u128);
        usize::try_from(value).map_err(|_| "a length in the pickle is too large".to_string())
    }

    /// A newline-terminated argument, without the newline.
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n');
        let n = n.ok_or_else(|| "the pickle is truncated".to_string())?;
        let line = self.take(n + 1)?;
        std::str::from_utf8(&line[..n]).map_err(|_| "a pickle text argument is not UTF-8".into())
    }

    fn text(&mut self, n: usize) -> Result<String, String> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a pickle string is not UTF-8".into())
    }

    fn push(&mut self, id: Id) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("the pickle's stack grows past {MAX_STACK} entries"));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, object: Object) -> Result<(), String> {
        let id = self.heap.add(object)?;
        self.push(id)
    }

    fn pop(&mut self) -> Result<Id, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("the pickle pops past a mark".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "the pickle pops an empty stack".into())
    }

    fn top(&self) -> Result<Id, String> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "the pickle reads an empty stack".into())
    }

    /// Everything pushed since the last mark, removing the mark.
    fn pop_mark(&mut self) -> Result<Vec<Id>, String> {
        let mark = self.marks.pop().ok_or("the pickle has no mark to pop")?;
        Ok(self.stack.split_off(mark))
    }

    /// Opcodes that push one constant.
    fn literal(&mut self, op: u8) -> Result<bool, String> {
        let object = match op {
            b'N' => Object::None,
            0x88 => Object::Bool(true),
            0x89 => Object::Bool(false),
            b'K' => Object::Int(self.u8()? as i64),
            b'M' => Object::Int(self.len(2)? as i64),
            b'J' => Object::Int(i32::from_le_bytes(self.take(4)?.try_into().expect("4")) as i64),
            0x8a => {
                let n = self.u8()? as usize;
                long(self.take(n)?)
            }
            0x8b => {
                let n = self.len(4)?;
                long(self.take(n)?)
            }
            b'I' | b'L' => text_int(self.line()?)?,
            b'F' => Object::Float(self.line()?.trim().parse().map_err(|_| "bad FLOAT")?),
            b'G' => Object::Float(f64::from_be_bytes(self.take(8)?.try_into().expect("8"))),
            b'X' => Object::Str(self.len(4).and_then(|n| self.text(n))?),
            0x8c => Object::Str(self.u8().and_then(|n| self.text(n as usize))?),
            0x8d => Object::Str(self.len(8).and_then(|n| self.text(n))?),
            b'V' | b'S' => Object::Str(self.line()?.trim_matches(['\'', '"']).to_string()),
            b'U' | b'C' => self.u8().and_then(|n| self.take(n as usize)).map(opaque)?,
            b'T' | b'B' => self.len(4).and_then(|n| self.take(n)).map(opaque)?,
            0x8e | 0x96 => self.len(8).and_then(|n| self.take(n)).map(opaque)?,
            0x8f => Object::Opaque, // EMPTY_SET
            b'c' => {
                let (module, name) = (self.line()?, self.line()?);
                Object::Global(objects::resolve(module, name)?)
            }
            _ => return Ok(false),
        };
        self.push_new(object)?;
        Ok(true)
    }

    /// Opcodes that build or fill containers, and stack manipulation.
    fn container(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'(' => {
                if self.marks.len() >= MAX_STACK {
                    return Err(format!("the pickle nests more than {MAX_STACK} marks"));
                }
                self.marks.push(self.stack.len());
            }
            b']' => self.push_new(Object::List(Vec::new()))?,
            b'}' => self.push_new(Object::Dict(Vec::new()))?,
            b')' => self.push_new(Object::Tuple(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push_new(Object::List(items))?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push_new(Object::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
                items.reverse();
                self.push_new(Object::Tuple(items))?;
            }
            b'd' => {
                let pairs = pairs(self.pop_mark()?)?;
                self.push_new(Object::Dict(pairs))?;
            }
            0x91 => {
                self.pop_mark()?;
                self.push_new(Object::Opaque)?; // FROZENSET
            }
            b'a' => {
                let item = self.pop()?;
                self.heap.extend(self.top()?, vec![item])?;
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.heap.extend(self.top()?, items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.heap.set_items(self.top()?, vec![(key, value)])?;
            }
            b'u' => {
                let items = pairs(self.pop_mark()?)?;
                self.heap.set_items(self.top()?, items)?;
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => drop(self.pop_mark()?),
            b'2' => self.push(self.top()?)?,
            0x80 => {
                let version = self.u8()?;
                if version > 5 {
                    return Err(format!("unsupported pickle protocol {version}"));
                }
            }
            0x95 => {
                self.len(8)?; // FRAME: only a buffering hint
            }
            0x98 => {} // READONLY_BUFFER
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// PUT, GET and their variants.
    fn memo_op(&mut self, op: u8) -> Result<bool, String> {
        let key = match op {
            b'p' | b'g' => self
                .line()?
                .trim()
                .parse::<u64>()
                .map_err(|_| "bad memo key")?,
            b'q' | b'h' => self.u8()? as u64,
            b'r' | b'j' => self.len(4)? as u64,
            0x94 => self.memo.len() as u64,
            _ => return Ok(false),
        };
        if matches!(op, b'g' | b'h' | b'j') {
            let id = *self
                .memo
                .get(&key)
                .ok_or("the pickle reads an unset memo entry")?;
            self.push(id)?;
        } else {
            if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
                return Err(format!("the pickle's memo grows past {MAX_MEMO} entries"));
            }
            let top = self.top()?;
            self.memo.insert(key, top);
        }
        Ok(true)
    }

    /// Opcodes that reference globals or call them; each call goes through [`Heap::call`].
    fn call(&mut self, op: u8) -> Result<bool, String> {
        let object = match op {
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Object::Str(module), Object::Str(name)) =
                    (self.heap.get(module), self.heap.get(name))
                else {
                    return Err("STACK_GLOBAL names a global with a non-string".into());
                };
                Object::Global(objects::resolve(module, name)?)
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let func = self.pop()?;
                let Object::Tuple(args) = self.heap.get(args) else {
                    return Err("the pickle calls with arguments that are not a tuple".into());
                };
                self.heap.call(func, args)?
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let func = self.pop()?;
                let Object::Tuple(args) = self.heap.get(args) else {
                    return Err("NEWOBJ_EX with arguments that are not a tuple".into());
                };
                self.heap.call(func, args)?
            }
            b'i' => {
                let (module, name) = (self.line()?, self.line()?);
                let func = self
                    .heap
                    .add(Object::Global(objects::resolve(module, name)?))?;
                let args = self.pop_mark()?;
                self.heap.call(func, &args)?
            }
            b'o' => {
                let items = self.pop_mark()?;
                let (&func, args) = items.split_first().ok_or("OBJ without a class")?;
                self.heap.call(func, args)?
            }
            b'b' => {
                let _state = self.pop()?;
                let target = self.top()?;
                if let Object::Global(_) = self.heap.get(target) {
                    return Err("the pickle sets the state of a class".into());
                }
                return Ok(true); // state of plain data (an OrderedDict's attributes): ignored
            }
            b'Q' => {
                let pid = self.pop()?;
                self.heap.persistent_load(pid)?
            }
            b'P' => return Err("the pickle uses a text persistent id (not torch's)".into()),
            0x82..=0x84 => return Err("the pickle uses the copyreg extension registry".into()),
            0x97 => return Err("the pickle refers to an out-of-band buffer".into()),
            _ => return Ok(false),
        };
        self.push_new(object)?;
        Ok(true)
    }
}

fn opaque(_: &[u8]) -> Object {
    Object::Opaque
}

/// A little-endian two's-complement integer of any width.
fn long(bytes: &[u8]) -> Object {
    if bytes.len() > 8 {
        return Object::BigInt(bytes.to_vec());
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Object::Int(i64::from_le_bytes(buf))
}

/// Protocol 0 `INT`/`LONG`: decimal text, `00`/`01` for booleans, `L` suffix for longs.
fn text_int(line: &str) -> Result<Object, String> {
    match line {
        "00" => return Ok(Object::Bool(false)),
        "01" => return Ok(Object::Bool(true)),
        _ => {}
    }
    let digits = line.trim().trim_end_matches('L');
    Ok(digits.parse().map(Object::Int).unwrap_or(Object::Opaque))
}

fn pairs(items: Vec<Id>) -> Result<Vec<(Id, Id)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("the pickle builds a dict from an odd number of items".into());
    }
    Ok(items.chunks(2).map(|kv| (kv[0], kv[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(bytes: &[u8]) -> String {
        parse(bytes).unwrap_err()
    }

    #[test]
    fn globals_outside_the_allow_list_are_refused_by_every_opcode() {
        let inst = b"(X\x02\x00\x00\x00lsios\nsystem\n.";
        let obj = b"(cos\nsystem\nX\x02\x00\x00\x00lso.";
        let reduce = b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.";
        for bytes in [&inst[..], obj, reduce] {
            assert!(refusal(bytes).contains("which is not a tensor or plain data"));
        }
        assert!(refusal(b"\x80\x02\x82\x01.").contains("extension registry"));
    }

    #[test]
    fn protocol_0_text_opcodes_build_plain_data() {
        // {'a': 1, 'b': [2.5, 'x']} as pickle.dumps(..., protocol=0) writes it.
        let bytes = b"(dp0\nVa\np1\nI1\nsVb\np2\n(lp3\nF2.5\naVx\np4\nas.";
        let pickle = parse(bytes).unwrap();
        let Object::Dict(pairs) = pickle.heap.get(pickle.root) else {
            panic!("not a dict");
        };
        let (key, value) = pairs[1];
        assert_eq!(*pickle.heap.get(key), Object::Str("b".into()));
        let Object::List(items) = pickle.heap.get(value) else {
            panic!("not a list");
        };
        assert_eq!(*pickle.heap.get(items[0]), Object::Float(2.5));
    }

    #[test]
    fn malformed_streams_are_errors() {
        assert!(refusal(b"").contains("truncated"));
        assert!(refusal(b"X\xff\xff\xff\xff").contains("truncated"));
        assert!(refusal(b"a.").contains("empty stack"));
        assert!(refusal(b"h\x05.").contains("unset memo"));
        assert!(refusal(b"\x80\x09.").contains("protocol 9"));
    }
}
