//! The in-guest reset: how `request` isolation reuses an instance without
//! letting anything of one request reach the next.
//!
//! A step's configured snapshot (see [`super::snapshot`]) is a component
//! whose core modules' data segments and global initialisers *are* the
//! state `configure` left. [`add_reset`] rewrites that component so that it
//! also exports `tollgate-reset: func() -> bool`, which puts every core
//! instance back into exactly that state:
//!
//! - every module that defines a memory or a mutable global exports them
//!   (under names of our own; nothing else in the module changes);
//! - a new core module imports them and holds a copy of each data segment
//!   as a passive segment. Its one function checks that no memory grew past
//!   its snapshot size (it answers `false` if one did: a memory cannot
//!   shrink), zeroes what the snapshot leaves zero (a page only when it is
//!   not zero already, see [`zero`]), copies the segments back with
//!   `memory.init`, and stores each mutable global's snapshot value;
//! - that function is lifted and exported by the component.
//!
//! After a request whose phases all returned normally, the runtime calls the
//! reset and, when it answers `true`, parks the instance for the next
//! request of the same step on the same worker ([`super::reuse`]). Every
//! other ending (a trap, a deadline, a host error, an invalid output, a
//! memory-cap hit) discards the instance, as before.
//!
//! Some guests cannot be reset this way, and [`add_reset`] refuses them (the
//! step then gets a fresh instance for every request, as without a reset):
//! code that changes a table (`table.set`, `table.grow`, `table.fill`,
//! `table.copy`, `table.init`, `elem.drop`) or uses passive data
//! (`memory.init`, `data.drop`), shared or 64-bit memories, memories with
//! custom page sizes, mutable globals of reference or vector type or
//! initialised from another global, data segments at a computed offset,
//! core modules inside nested components, modules instantiated twice, and
//! memories larger than
//! [`MAX_RESET_BYTES`] (zeroing them would cost more than a fresh instance).

use std::collections::HashMap;
use wasm_encoder as enc;
use wasmparser::{
    CanonicalFunction, Chunk, ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind,
    Encoding, Instance, Operator, Parser, Payload, TypeRef,
};

/// The component export that resets an instance.
pub(super) const EXPORT: &str = "tollgate-reset";

/// Largest memory (bytes at snapshot size) the reset rewrites after every
/// request; past it a fresh copy-on-write instance is cheaper. Measured
/// with `tests/bench/steps` on the standard 5-step chain: with 192 KiB
/// memories (128 KiB stacks) the reset saved ~4 µs of CPU per step against
/// a fresh instance, with 1.1 MiB ones (Rust's default 1 MiB stack) it
/// cost ~48 µs more; the two meet near 256 KiB.
pub(super) const MAX_RESET_BYTES: u64 = 256 << 10;

const PAGE: u64 = 65536;

/// `component` (a configured snapshot) with a `tollgate-reset` export, or
/// why it cannot have one.
pub(super) fn add_reset(component: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = enc::Component::new();
    let mut n = Counts::default();
    let mut modules: Vec<Option<ModuleState>> = Vec::new();
    let mut instance_of: HashMap<u32, u32> = HashMap::new();
    let mut parser = Parser::new(0);
    let mut rest = component;
    loop {
        let (payload, consumed) = match parser.parse(rest, true).map_err(|e| e.to_string())? {
            Chunk::Parsed { consumed, payload } => (payload, consumed),
            Chunk::NeedMoreData(_) => return Err("truncated component".into()),
        };
        rest = &rest[consumed..];
        match &payload {
            Payload::Version { encoding, .. } => {
                if *encoding != Encoding::Component {
                    return Err("not a component".into());
                }
                continue;
            }
            Payload::End(_) => break,
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                let (start, end) = (unchecked_range.start as usize, unchecked_range.end as usize);
                let len = end - start;
                let bytes = &component[start..end];
                let index = modules.len();
                let (state, wasm) =
                    rewrite_module(bytes).map_err(|e| format!("core module {index}: {e}"))?;
                out.section(&enc::RawSection {
                    id: enc::ComponentSectionId::CoreModule as u8,
                    data: &wasm,
                });
                modules.push(state);
                rest = &rest[len..];
                continue;
            }
            Payload::ComponentSection {
                unchecked_range, ..
            } => {
                // wit-component nests components that only wrap types and
                // imports; one with a core module inside has state of its
                // own.
                let (start, end) = (unchecked_range.start as usize, unchecked_range.end as usize);
                let nested = &component[start..end];
                for p in Parser::new(0).parse_all(nested) {
                    if let Payload::ModuleSection { .. } = p.map_err(|e| e.to_string())? {
                        return Err("a nested component has a core module".into());
                    }
                }
                out.section(&enc::RawSection {
                    id: enc::ComponentSectionId::Component as u8,
                    data: nested,
                });
                rest = &rest[end - start..];
                continue;
            }
            Payload::ComponentStartSection { .. } => {
                return Err("component start functions are not reset".into());
            }
            _ => {}
        }
        let Some((id, range)) = payload.as_section() else {
            return Err("unexpected payload in a component".into());
        };
        out.section(&enc::RawSection {
            id,
            data: &component[range.start as usize..range.end as usize],
        });
        count(&payload, &mut n, &mut instance_of)?;
    }

    // The resetter: imports each instance's state, resets it.
    let mut plan = Resetter::default();
    let mut args: Vec<(String, u32)> = Vec::new();
    for (module, state) in modules.iter().enumerate() {
        let Some(state) = state else { continue };
        let Some(&instance) = instance_of.get(&(module as u32)) else {
            continue; // never instantiated: no state
        };
        let name = instance.to_string();
        plan.add(&name, state);
        args.push((name, instance));
    }
    if args.is_empty() {
        return Err("no core instance has state to reset".into());
    }
    out.section(&enc::ModuleSection(&plan.finish()));
    let mut instances = enc::InstanceSection::new();
    instances.instantiate(
        modules.len() as u32,
        args.iter()
            .map(|(name, i)| (name.as_str(), enc::ModuleArg::Instance(*i))),
    );
    out.section(&instances);
    let mut aliases = enc::ComponentAliasSection::new();
    aliases.alias(enc::Alias::CoreInstanceExport {
        instance: n.core_instances,
        kind: enc::ExportKind::Func,
        name: "reset",
    });
    out.section(&aliases);
    let mut types = enc::ComponentTypeSection::new();
    types
        .function()
        .params::<_, enc::ComponentValType>([])
        .result(Some(enc::ComponentValType::Primitive(
            enc::PrimitiveValType::Bool,
        )));
    out.section(&types);
    let mut canon = enc::CanonicalFunctionSection::new();
    canon.lift(n.core_funcs, n.types, []);
    out.section(&canon);
    let mut exports = enc::ComponentExportSection::new();
    exports.export(EXPORT, enc::ComponentExportKind::Func, n.funcs, None);
    out.section(&exports);
    Ok(out.finish())
}

/// The component's index spaces that the additions refer to.
#[derive(Default)]
struct Counts {
    core_instances: u32,
    core_funcs: u32,
    types: u32,
    funcs: u32,
}

fn count(
    payload: &Payload<'_>,
    n: &mut Counts,
    instance_of: &mut HashMap<u32, u32>,
) -> Result<(), String> {
    let e = |e: wasmparser::BinaryReaderError| e.to_string();
    let component_kind = |kind: ComponentExternalKind, n: &mut Counts| match kind {
        ComponentExternalKind::Func => {
            n.funcs += 1;
            Ok(())
        }
        ComponentExternalKind::Type => {
            n.types += 1;
            Ok(())
        }
        ComponentExternalKind::Instance => Ok(()),
        other => Err(format!("component {other:?} items are not reset")),
    };
    match payload {
        Payload::InstanceSection(reader) => {
            for instance in reader.clone() {
                let index = n.core_instances;
                n.core_instances += 1;
                if let Instance::Instantiate { module_index, .. } = instance.map_err(e)? {
                    if instance_of.insert(module_index, index).is_some() {
                        return Err(format!("core module {module_index} is instantiated twice"));
                    }
                }
            }
        }
        Payload::ComponentAliasSection(reader) => {
            for alias in reader.clone() {
                match alias.map_err(e)? {
                    ComponentAlias::CoreInstanceExport { kind, .. } => {
                        if kind == wasmparser::ExternalKind::Func {
                            n.core_funcs += 1;
                        }
                    }
                    ComponentAlias::InstanceExport { kind, .. } => component_kind(kind, n)?,
                    ComponentAlias::Outer { kind, .. } => match kind {
                        ComponentOuterAliasKind::CoreType => {}
                        ComponentOuterAliasKind::Type => n.types += 1,
                        other => return Err(format!("outer {other:?} aliases are not reset")),
                    },
                }
            }
        }
        Payload::ComponentCanonicalSection(reader) => {
            for f in reader.clone() {
                match f.map_err(e)? {
                    CanonicalFunction::Lift { .. } => n.funcs += 1,
                    _ => n.core_funcs += 1,
                }
            }
        }
        Payload::ComponentImportSection(reader) => {
            for import in reader.clone() {
                component_kind(import.map_err(e)?.ty.kind(), n)?;
            }
        }
        Payload::ComponentExportSection(reader) => {
            for export in reader.clone() {
                let export = export.map_err(e)?;
                if export.name.name == EXPORT {
                    return Err(format!("the component already exports `{EXPORT}`"));
                }
                component_kind(export.kind, n)?;
            }
        }
        Payload::ComponentTypeSection(reader) => {
            n.types += reader.count();
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Core modules.

/// What a module's instance holds that the reset restores.
#[derive(Default)]
struct ModuleState {
    /// Defined memories: (export name, type, active segments in order).
    memories: Vec<MemoryState>,
    /// Defined mutable globals: (export name, type, snapshot value).
    globals: Vec<(String, enc::ValType, enc::Instruction<'static>)>,
}

struct MemoryState {
    export: String,
    ty: enc::MemoryType,
    /// (offset, bytes), in the module's order.
    segments: Vec<(u32, Vec<u8>)>,
}

/// The module with its memories and mutable globals exported, and what the
/// reset must restore (`None` when it defines neither).
fn rewrite_module(wasm: &[u8]) -> Result<(Option<ModuleState>, Vec<u8>), String> {
    let e = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut imported_memories = 0u32;
    let mut imported_globals = 0u32;
    let mut memories: Vec<wasmparser::MemoryType> = Vec::new();
    let mut globals: Vec<(u32, wasmparser::Global<'_>)> = Vec::new();
    let mut exports: Vec<wasmparser::Export<'_>> = Vec::new();
    let mut segments: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    let mut sections: Vec<(u8, std::ops::Range<usize>)> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(e)?;
        match &payload {
            Payload::Version { encoding, .. } if *encoding != Encoding::Module => {
                return Err("a nested component".into());
            }
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    match import.map_err(e)?.ty {
                        TypeRef::Memory(_) => imported_memories += 1,
                        TypeRef::Global(_) => imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for m in reader.clone() {
                    memories.push(m.map_err(e)?);
                }
            }
            Payload::GlobalSection(reader) => {
                for g in reader.clone() {
                    let index = imported_globals + globals.len() as u32;
                    globals.push((index, g.map_err(e)?));
                }
            }
            Payload::ExportSection(reader) => {
                for x in reader.clone() {
                    exports.push(x.map_err(e)?);
                }
            }
            Payload::DataSection(reader) => {
                for d in reader.clone() {
                    let d = d.map_err(e)?;
                    match d.kind {
                        // Inert: no code may use one (`memory.init` is
                        // refused below). wizer leaves empty ones behind.
                        wasmparser::DataKind::Passive => {}
                        wasmparser::DataKind::Active {
                            memory_index,
                            offset_expr,
                        } => {
                            let mut ops = offset_expr.get_operators_reader();
                            let at = match (ops.read().map_err(e)?, ops.read().map_err(e)?) {
                                (Operator::I32Const { value }, Operator::End) => value as u32,
                                _ => return Err("a data segment at a computed offset".into()),
                            };
                            segments.push((memory_index, at, d.data.to_vec()));
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(e)?;
                while !ops.eof() {
                    if let Some(what) = unresettable(&ops.read().map_err(e)?) {
                        return Err(format!("code uses `{what}`"));
                    }
                }
            }
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            sections.push((id, range.start as usize..range.end as usize));
        }
    }

    let mut state = ModuleState::default();
    for (i, m) in memories.iter().enumerate() {
        if m.memory64 || m.shared || m.page_size_log2.is_some_and(|p| p != 16) {
            return Err("a shared, 64-bit or custom-page memory".into());
        }
        if m.initial * PAGE > MAX_RESET_BYTES {
            return Err(format!(
                "its memory is {} KiB, above the {} KiB a reset rewrites",
                m.initial * PAGE / 1024,
                MAX_RESET_BYTES / 1024
            ));
        }
        let index = imported_memories + i as u32;
        let segs: Vec<(u32, Vec<u8>)> = segments
            .iter()
            .filter(|(mem, _, _)| *mem == index)
            .map(|(_, at, bytes)| (*at, bytes.clone()))
            .collect();
        for (at, bytes) in &segs {
            if u64::from(*at) + bytes.len() as u64 > m.initial * PAGE {
                return Err("a data segment past its memory's initial size".into());
            }
        }
        state.memories.push(MemoryState {
            export: unique(&exports, &format!("tollgate-reset-memory-{index}")),
            ty: enc::MemoryType {
                minimum: m.initial,
                maximum: m.maximum,
                memory64: false,
                shared: false,
                page_size_log2: None,
            },
            segments: segs,
        });
    }
    for (index, g) in &globals {
        if !g.ty.mutable {
            continue;
        }
        let mut ops = g.init_expr.get_operators_reader();
        let (value, ty) = match (ops.read().map_err(e)?, ops.read().map_err(e)?) {
            (Operator::I32Const { value }, Operator::End) => {
                (enc::Instruction::I32Const(value), enc::ValType::I32)
            }
            (Operator::I64Const { value }, Operator::End) => {
                (enc::Instruction::I64Const(value), enc::ValType::I64)
            }
            (Operator::F32Const { value }, Operator::End) => (
                enc::Instruction::F32Const(f32::from_bits(value.bits()).into()),
                enc::ValType::F32,
            ),
            (Operator::F64Const { value }, Operator::End) => (
                enc::Instruction::F64Const(f64::from_bits(value.bits()).into()),
                enc::ValType::F64,
            ),
            _ => return Err("a mutable global not initialised to a number constant".into()),
        };
        let name = unique(&exports, &format!("tollgate-reset-global-{index}"));
        state.globals.push((name, ty, value));
    }
    if state.memories.is_empty() && state.globals.is_empty() {
        return Ok((None, wasm.to_vec()));
    }

    // The same module, with the new exports.
    let mut added = enc::ExportSection::new();
    for x in &exports {
        added.export(x.name, export_kind(x.kind), x.index);
    }
    for (i, m) in state.memories.iter().enumerate() {
        added.export(
            &m.export,
            enc::ExportKind::Memory,
            imported_memories + i as u32,
        );
    }
    for ((name, _, _), index) in state.globals.iter().zip(
        globals
            .iter()
            .filter(|(_, g)| g.ty.mutable)
            .map(|(i, _)| *i),
    ) {
        added.export(name, enc::ExportKind::Global, index);
    }
    let mut module = enc::Module::new();
    let mut exported = false;
    for (id, range) in sections {
        // Sections that come after exports: start 8, element 9, data count
        // 12, code 10, data 11.
        let after_exports = matches!(id, 8..=12);
        if id == 7 || (after_exports && !exported) {
            if !exported {
                module.section(&added);
                exported = true;
            }
            if id == 7 {
                continue;
            }
        }
        module.section(&enc::RawSection {
            id,
            data: &wasm[range],
        });
    }
    if !exported {
        module.section(&added);
    }
    Ok((Some(state), module.finish()))
}

/// `name`, which the module must not already export.
fn unique(exports: &[wasmparser::Export<'_>], name: &str) -> String {
    let mut name = name.to_string();
    while exports.iter().any(|x| x.name == name) {
        name.push('_');
    }
    name
}

fn export_kind(kind: wasmparser::ExternalKind) -> enc::ExportKind {
    match kind {
        wasmparser::ExternalKind::Func | wasmparser::ExternalKind::FuncExact => {
            enc::ExportKind::Func
        }
        wasmparser::ExternalKind::Table => enc::ExportKind::Table,
        wasmparser::ExternalKind::Memory => enc::ExportKind::Memory,
        wasmparser::ExternalKind::Global => enc::ExportKind::Global,
        wasmparser::ExternalKind::Tag => enc::ExportKind::Tag,
    }
}

/// The instruction's name when a reset could not undo what it does.
fn unresettable(op: &Operator<'_>) -> Option<&'static str> {
    Some(match op {
        Operator::TableSet { .. } => "table.set",
        Operator::TableGrow { .. } => "table.grow",
        Operator::TableFill { .. } => "table.fill",
        Operator::TableCopy { .. } => "table.copy",
        Operator::TableInit { .. } => "table.init",
        Operator::ElemDrop { .. } => "elem.drop",
        Operator::MemoryInit { .. } => "memory.init",
        Operator::DataDrop { .. } => "data.drop",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// The resetter module.

/// Bytes checked, and zeroed when not all zero, at a time.
const CHUNK: u64 = 4096;

/// Instructions that zero `[from, to)` of memory `mem`. Whole pages are
/// read first and written only when not already zero: most of a guest's
/// stack and heap is never touched by a request, and writing it would make
/// every page of every reset instance resident (measured: 29 MB more RSS
/// for the 5-step chain after load than with fresh instances, whose
/// untouched pages stay unmapped). Reading an untouched page costs no
/// memory. The ragged ends are zeroed outright.
fn zero(body: &mut Vec<enc::Instruction<'static>>, mem: u32, from: u64, to: u64) {
    use enc::Instruction as I;
    let fill = |body: &mut Vec<I<'static>>, from: u64, to: u64| {
        if to > from {
            body.extend([
                I::I32Const(from as u32 as i32),
                I::I32Const(0),
                I::I32Const((to - from) as u32 as i32),
                I::MemoryFill(mem),
            ]);
        }
    };
    let (first, last) = (from.div_ceil(CHUNK) * CHUNK, to / CHUNK * CHUNK);
    if first >= last {
        fill(body, from, to);
        return;
    }
    fill(body, from, first);
    fill(body, last, to);
    let (page, at, seen) = (0, 1, 2);
    let load = |offset: u64| {
        I::V128Load(enc::MemArg {
            offset,
            align: 4,
            memory_index: mem,
        })
    };
    body.extend([I::I32Const(first as u32 as i32), I::LocalSet(page)]);
    body.extend([I::Loop(enc::BlockType::Empty)]);
    body.extend([
        I::V128Const(0),
        I::LocalSet(seen),
        I::LocalGet(page),
        I::LocalSet(at),
        I::Loop(enc::BlockType::Empty),
        I::LocalGet(seen),
    ]);
    // 128 bytes per turn of the inner loop.
    for k in 0..8 {
        body.extend([I::LocalGet(at), load(k * 16), I::V128Or]);
    }
    body.extend([
        I::LocalSet(seen),
        I::LocalGet(at),
        I::I32Const(128),
        I::I32Add,
        I::LocalTee(at),
        I::LocalGet(page),
        I::I32Const(CHUNK as i32),
        I::I32Add,
        I::I32LtU,
        I::BrIf(0),
        I::End,
        I::LocalGet(seen),
        I::V128AnyTrue,
        I::If(enc::BlockType::Empty),
        I::LocalGet(page),
        I::I32Const(0),
        I::I32Const(CHUNK as i32),
        I::MemoryFill(mem),
        I::End,
        I::LocalGet(page),
        I::I32Const(CHUNK as i32),
        I::I32Add,
        I::LocalTee(page),
        I::I32Const(last as u32 as i32),
        I::I32LtU,
        I::BrIf(0),
        I::End,
    ]);
}

#[derive(Default)]
struct Resetter {
    imports: enc::ImportSection,
    data: enc::DataSection,
    segments: u32,
    body: Vec<enc::Instruction<'static>>,
    checks: Vec<enc::Instruction<'static>>,
    memories: u32,
    globals: u32,
}

impl Resetter {
    fn add(&mut self, instance: &str, state: &ModuleState) {
        use enc::Instruction as I;
        for m in &state.memories {
            let mem = self.memories;
            self.memories += 1;
            self.imports
                .import(instance, &m.export, enc::EntityType::Memory(m.ty));
            // A memory that grew cannot shrink back: no reset.
            self.checks.extend([
                I::MemorySize(mem),
                I::I32Const(m.ty.minimum as i32),
                I::I32Ne,
                I::If(enc::BlockType::Empty),
                I::I32Const(0),
                I::Return,
                I::End,
            ]);
            let size = m.ty.minimum * PAGE;
            let mut sorted: Vec<(u32, u32, usize)> = m
                .segments
                .iter()
                .enumerate()
                .map(|(i, (at, bytes))| (*at, bytes.len() as u32, i))
                .collect();
            sorted.sort();
            let disjoint = sorted
                .windows(2)
                .all(|w| u64::from(w[0].0) + u64::from(w[0].1) <= u64::from(w[1].0));
            let base = self.segments;
            for (_, bytes) in &m.segments {
                self.data.passive(bytes.iter().copied());
                self.segments += 1;
            }
            let init = |body: &mut Vec<I<'static>>, at: u32, len: u32, seg: usize| {
                body.extend([
                    I::I32Const(at as i32),
                    I::I32Const(0),
                    I::I32Const(len as i32),
                    I::MemoryInit {
                        mem,
                        data_index: base + seg as u32,
                    },
                ]);
            };
            if disjoint {
                // Zero the gaps, copy the segments: each byte written once.
                let mut cursor = 0u64;
                for &(at, len, seg) in &sorted {
                    zero(&mut self.body, mem, cursor, u64::from(at));
                    init(&mut self.body, at, len, seg);
                    cursor = u64::from(at) + u64::from(len);
                }
                zero(&mut self.body, mem, cursor, size);
            } else {
                // Overlapping segments apply in order, as at instantiation.
                zero(&mut self.body, mem, 0, size);
                for (seg, (at, bytes)) in m.segments.iter().enumerate() {
                    init(&mut self.body, *at, bytes.len() as u32, seg);
                }
            }
        }
        for (name, ty, value) in &state.globals {
            let global = self.globals;
            self.globals += 1;
            self.imports.import(
                instance,
                name,
                enc::EntityType::Global(enc::GlobalType {
                    val_type: *ty,
                    mutable: true,
                    shared: false,
                }),
            );
            self.body.push(value.clone());
            self.body.push(I::GlobalSet(global));
        }
    }

    fn finish(self) -> enc::Module {
        let mut types = enc::TypeSection::new();
        types.ty().function([], [enc::ValType::I32]);
        let mut funcs = enc::FunctionSection::new();
        funcs.function(0);
        let mut exports = enc::ExportSection::new();
        exports.export("reset", enc::ExportKind::Func, 0);
        // Locals: 0 and 1 the page and the position in it, 2 the OR of
        // what was read (see `zero`).
        let mut f = enc::Function::new([(2, enc::ValType::I32), (1, enc::ValType::V128)]);
        for i in self.checks.iter().chain(self.body.iter()) {
            f.instruction(i);
        }
        f.instruction(&enc::Instruction::I32Const(1));
        f.instruction(&enc::Instruction::End);
        let mut code = enc::CodeSection::new();
        code.function(&f);
        let mut module = enc::Module::new();
        module.section(&types);
        module.section(&self.imports);
        module.section(&funcs);
        module.section(&exports);
        module.section(&enc::DataCountSection {
            count: self.segments,
        });
        module.section(&code);
        module.section(&self.data);
        module
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enc::Instruction as I;
    use wasmtime::{Engine, Instance, Linker, Module, Store};

    /// A core module with one memory of `pages` pages and these data
    /// segments, a mutable global (7), and functions `dirty` (writes at 16
    /// and 1000, 9000 and 12287, sets the global to 99), `peek(addr) -> u8`,
    /// `global`,
    /// `grow` and, with `table_set`, `poke-table` (a `table.set`).
    fn module(pages: u64, segments: &[(u32, &[u8])], table_set: bool) -> Vec<u8> {
        let mut types = enc::TypeSection::new();
        types.ty().function([], []); // 0
        types
            .ty()
            .function([enc::ValType::I32], [enc::ValType::I32]); // 1
        types.ty().function([], [enc::ValType::I32]); // 2
        let mut funcs = enc::FunctionSection::new();
        let mut code = enc::CodeSection::new();
        let mut exports = enc::ExportSection::new();
        let mut add = |name: &str, ty: u32, body: &[I<'_>]| {
            let index = funcs.len();
            funcs.function(ty);
            let mut f = enc::Function::new([]);
            for i in body {
                f.instruction(i);
            }
            f.instruction(&I::End);
            code.function(&f);
            exports.export(name, enc::ExportKind::Func, index);
        };
        let store8 = enc::MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        };
        add(
            "dirty",
            0,
            &[
                I::I32Const(16),
                I::I32Const(0x58),
                I::I32Store8(store8),
                I::I32Const(1000),
                I::I32Const(0x41),
                I::I32Store8(store8),
                I::I32Const(9000),
                I::I32Const(0x42),
                I::I32Store8(store8),
                I::I32Const(12287),
                I::I32Const(0x43),
                I::I32Store8(store8),
                I::I32Const(99),
                I::GlobalSet(0),
            ],
        );
        add("peek", 1, &[I::LocalGet(0), I::I32Load8U(store8)]);
        add("global", 2, &[I::GlobalGet(0)]);
        add("grow", 0, &[I::I32Const(1), I::MemoryGrow(0), I::Drop]);
        if table_set {
            add(
                "poke-table",
                0,
                &[
                    I::I32Const(0),
                    I::RefNull(enc::HeapType::FUNC),
                    I::TableSet(0),
                ],
            );
        }
        let mut module = enc::Module::new();
        module.section(&types);
        module.section(&funcs);
        if table_set {
            let mut tables = enc::TableSection::new();
            tables.table(enc::TableType {
                element_type: enc::RefType::FUNCREF,
                minimum: 1,
                maximum: None,
                table64: false,
                shared: false,
            });
            module.section(&tables);
        }
        let mut memories = enc::MemorySection::new();
        memories.memory(enc::MemoryType {
            minimum: pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        let mut globals = enc::GlobalSection::new();
        globals.global(
            enc::GlobalType {
                val_type: enc::ValType::I32,
                mutable: true,
                shared: false,
            },
            &enc::ConstExpr::i32_const(7),
        );
        module.section(&globals);
        module.section(&exports);
        module.section(&code);
        let mut data = enc::DataSection::new();
        for (at, bytes) in segments {
            data.active(
                0,
                &enc::ConstExpr::i32_const(*at as i32),
                bytes.iter().copied(),
            );
        }
        module.section(&data);
        module.finish()
    }

    /// The module rewritten, instantiated, and its resetter linked to it.
    fn instantiate(wasm: &[u8]) -> (Store<()>, Instance, Instance) {
        let (state, rewritten) = rewrite_module(wasm).unwrap();
        let mut resetter = Resetter::default();
        resetter.add("0", &state.expect("it has state"));
        let engine = Engine::default();
        let mut store = Store::new(&engine, ());
        let guest =
            Instance::new(&mut store, &Module::new(&engine, rewritten).unwrap(), &[]).unwrap();
        let mut linker = Linker::new(&engine);
        linker.instance(&mut store, "0", guest).unwrap();
        let module = Module::new(&engine, resetter.finish().finish()).unwrap();
        let reset = linker.instantiate(&mut store, &module).unwrap();
        (store, guest, reset)
    }

    fn call(store: &mut Store<()>, i: Instance, name: &str) -> i32 {
        match name {
            "dirty" | "grow" => {
                i.get_typed_func::<(), ()>(&mut *store, name)
                    .unwrap()
                    .call(&mut *store, ())
                    .unwrap();
                0
            }
            _ => i
                .get_typed_func::<(), i32>(&mut *store, name)
                .unwrap()
                .call(&mut *store, ())
                .unwrap(),
        }
    }

    fn peek(store: &mut Store<()>, i: Instance, at: i32) -> u8 {
        let f = i.get_typed_func::<i32, i32>(&mut *store, "peek").unwrap();
        f.call(&mut *store, at).unwrap() as u8
    }

    #[test]
    fn a_reset_restores_memory_and_globals() {
        let wasm = module(2, &[(16, b"snapshot"), (70000, b"page two")], false);
        let (mut store, guest, reset) = instantiate(&wasm);
        call(&mut store, guest, "dirty");
        assert_eq!(peek(&mut store, guest, 16), 0x58);
        assert_eq!(peek(&mut store, guest, 1000), 0x41);
        assert_eq!(call(&mut store, guest, "global"), 99);
        assert_eq!(call(&mut store, reset, "reset"), 1);
        let read = |store: &mut Store<()>, at: i32, n: i32| -> Vec<u8> {
            (at..at + n).map(|a| peek(store, guest, a)).collect()
        };
        assert_eq!(read(&mut store, 16, 8), b"snapshot");
        assert_eq!(peek(&mut store, guest, 1000), 0, "a gap is zero again");
        assert_eq!(
            peek(&mut store, guest, 9000),
            0,
            "a whole page of a gap too"
        );
        assert_eq!(peek(&mut store, guest, 12287), 0, "to its last byte");
        assert_eq!(read(&mut store, 70000, 8), b"page two");
        assert_eq!(call(&mut store, guest, "global"), 7);
        // And again: a reset instance resets like a fresh one.
        call(&mut store, guest, "dirty");
        assert_eq!(call(&mut store, reset, "reset"), 1);
        assert_eq!(read(&mut store, 16, 8), b"snapshot");
    }

    #[test]
    fn overlapping_segments_apply_in_order() {
        let wasm = module(1, &[(16, b"snapshot"), (20, b"SHOT")], false);
        let (mut store, guest, reset) = instantiate(&wasm);
        call(&mut store, guest, "dirty");
        assert_eq!(call(&mut store, reset, "reset"), 1);
        let got: Vec<u8> = (16..24).map(|a| peek(&mut store, guest, a)).collect();
        assert_eq!(got, b"snapSHOT");
        assert_eq!(peek(&mut store, guest, 1000), 0);
    }

    #[test]
    fn a_memory_that_grew_is_not_reset() {
        let (mut store, guest, reset) = instantiate(&module(1, &[(16, b"x")], false));
        call(&mut store, guest, "grow");
        assert_eq!(call(&mut store, reset, "reset"), 0);
    }

    #[test]
    fn guests_a_reset_cannot_cover_are_refused() {
        let refused = |wasm: &[u8]| rewrite_module(wasm).err().unwrap_or_default();
        assert!(refused(&module(1, &[], true)).contains("table.set"));
        assert!(refused(&module(5, &[], false)).contains("above the 256 KiB"));
        assert!(refused(&module(1, &[(65530, b"past the end")], false)).contains("past"));
        assert_eq!(
            add_reset(&module(1, &[], false)).unwrap_err(),
            "not a component"
        );
        assert!(add_reset(b"\0asm garbage").is_err());
    }

    #[test]
    fn a_module_without_state_is_left_as_it_is() {
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let wasm = m.finish();
        let (state, out) = rewrite_module(&wasm).unwrap();
        assert!(state.is_none());
        assert_eq!(out, wasm);
    }
}
