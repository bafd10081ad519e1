//! Bounds on the headers a step returns, checked in the guest's memory
//! before wasmtime lifts its decision into host values.
//!
//! Lifting a decision allocates a `String` and a `Vec` per header: a guest
//! returning 100 000 headers held the serving thread for tens of
//! milliseconds (the lift never yields) before the checks after it
//! ([`super::checks`]) refused the decision. Here the return area is read
//! first, where the canonical ABI puts it: the header list's pointer and
//! length, then each element's name and value lengths. More than
//! [`MAX_HEADERS_OUT`] headers, or more than [`MAX_HEADER_BYTES_OUT`] of
//! names and values, and the call fails with `BadOutput` without lifting
//! anything. Those checks cost a few reads of the guest's memory per header.
//!
//! The hook is [`Bounded`], a return type with the decision's own ABI whose
//! lift checks before it delegates. The layouts below are those of the
//! `tollgate:policy@0.1.0` types (the tests check them against wasmtime's
//! own sizes); a type whose layout differed would not pass the type check
//! at load (`plugin::Exports::find`).

use super::bindings::types::{RequestDecision as RequestDecision01, ResponseDecision};
use super::RequestDecision;
use super::MAX_HEADERS_OUT;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

/// Most bytes of header names and values in one decision.
pub const MAX_HEADER_BYTES_OUT: usize = 1 << 20;

/// Why a decision was refused before it was lifted (becomes `BadOutput`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutputTooLarge(pub String);

/// A decision whose header list is bounded before it is lifted.
pub struct Bounded<T>(pub T);

/// A header list in guest memory: its pointer, its length, and the size
/// of one element.
pub type List = (usize, usize, usize);

/// Where a decision's header lists are, in its return area.
pub trait HeaderList {
    /// The lists (up to two: 0.2.0's request edits carry response headers
    /// too), or none for a case without headers.
    fn headers(area: &[u8]) -> [Option<List>; 2];
}

/// A list of `header` or `header-op` elements: (pointer, length) pairs at
/// 4 (`header-op`, after its case) or 0 (`header`).
const HEADER_SIZE: usize = 16;
const HEADER_OP_SIZE: usize = 20;

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
}

/// The case of a decision (`continue` 0, `respond` 1); its payload at 4.
fn case(area: &[u8]) -> Option<u8> {
    area.first().copied()
}

fn list(area: &[u8], at: usize, size: usize) -> Option<List> {
    Some((u32_at(area, at)?, u32_at(area, at + 4)?, size))
}

impl HeaderList for RequestDecision01 {
    fn headers(area: &[u8]) -> [Option<List>; 2] {
        match case(area) {
            // request-edits: `headers` first.
            Some(0) => [list(area, 4, HEADER_OP_SIZE), None],
            // response: `status` (u16), then `headers` at 4.
            Some(1) => [list(area, 8, HEADER_SIZE), None],
            _ => [None, None],
        }
    }
}

impl HeaderList for RequestDecision {
    fn headers(area: &[u8]) -> [Option<List>; 2] {
        match case(area) {
            // request-edits: `headers`, then `response-headers`.
            Some(0) => [
                list(area, 4, HEADER_OP_SIZE),
                list(area, 12, HEADER_OP_SIZE),
            ],
            Some(1) => [list(area, 8, HEADER_SIZE), None],
            _ => [None, None],
        }
    }
}

impl HeaderList for ResponseDecision {
    fn headers(area: &[u8]) -> [Option<List>; 2] {
        match case(area) {
            // response-edits: `status` (option<u16>, 4 bytes), then `headers`.
            Some(0) => [list(area, 8, HEADER_OP_SIZE), None],
            Some(1) => [list(area, 8, HEADER_SIZE), None],
            _ => [None, None],
        }
    }
}

/// Check the header list of the decision in `area` (its return area in
/// `memory`). What does not make sense (out of bounds, a bad case) is left
/// to wasmtime's own lift, which refuses it.
pub fn check<T: HeaderList>(memory: &[u8], area: &[u8]) -> Result<(), OutputTooLarge> {
    for (ptr, len, size) in T::headers(area).into_iter().flatten() {
        check_list(memory, ptr, len, size)?;
    }
    Ok(())
}

fn check_list(memory: &[u8], ptr: usize, len: usize, size: usize) -> Result<(), OutputTooLarge> {
    if len > MAX_HEADERS_OUT {
        return Err(OutputTooLarge(format!(
            "{len} headers (at most {MAX_HEADERS_OUT})"
        )));
    }
    let Some(list) = memory.get(ptr..).and_then(|m| m.get(..len * size)) else {
        return Ok(());
    };
    let mut bytes = 0usize;
    for el in list.chunks_exact(size) {
        // A `header-op`: its case, then a header (name, value) or a name.
        let (fields, pairs) = if size == HEADER_OP_SIZE {
            (&el[4..], if el[0] == 2 { 1 } else { 2 })
        } else {
            (el, 2)
        };
        for i in 0..pairs {
            bytes = bytes.saturating_add(u32_at(fields, i * 8 + 4).unwrap_or(0));
        }
    }
    if bytes > MAX_HEADER_BYTES_OUT {
        return Err(OutputTooLarge(format!(
            "{bytes} bytes of header names and values (at most {}KiB)",
            MAX_HEADER_BYTES_OUT >> 10
        )));
    }
    Ok(())
}

// SAFETY: `Bounded<T>` has `T`'s ABI, type check and lowering type, and
// lifts by delegating to `T` (after reading memory only through the
// `LiftContext`'s checked slice).
#[allow(unsafe_code)]
unsafe impl<T: ComponentType> ComponentType for Bounded<T> {
    type Lower = T::Lower;
    const ABI: CanonicalAbiInfo = T::ABI;
    const MAY_REQUIRE_REALLOC: bool = T::MAY_REQUIRE_REALLOC;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        T::typecheck(ty, types)
    }
}

// SAFETY: as above; the lift is `T`'s.
#[allow(unsafe_code)]
unsafe impl<T: Lift + HeaderList> Lift for Bounded<T> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        // A decision is never returned flat (it is more than one value):
        // it always comes through memory, below.
        T::linear_lift_from_flat(cx, ty, src).map(Bounded)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        check::<T>(cx.memory(), bytes)?;
        T::linear_lift_from_memory(cx, ty, bytes).map(Bounded)
    }
}

/// The layouts [`HeaderList`] reads, as wasmtime computes them.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Header, HeaderOp};
    use wasmtime::component::__internal::ComponentVariant;

    #[test]
    fn the_layouts_read_are_wasmtimes() {
        assert_eq!(<Header as ComponentType>::SIZE32, HEADER_SIZE);
        assert_eq!(<HeaderOp as ComponentType>::SIZE32, HEADER_OP_SIZE);
        assert_eq!(<HeaderOp as ComponentVariant>::PAYLOAD_OFFSET32, 4);
        assert_eq!(<RequestDecision as ComponentVariant>::PAYLOAD_OFFSET32, 4);
        assert_eq!(<RequestDecision01 as ComponentVariant>::PAYLOAD_OFFSET32, 4);
        // 0.2.0's request edits: two lists first (pointer and length each).
        assert_eq!(
            <Vec<HeaderOp> as ComponentType>::SIZE32,
            8,
            "a list is a pointer and a length"
        );
        assert_eq!(<ResponseDecision as ComponentVariant>::PAYLOAD_OFFSET32, 4);
        // `header-op`'s cases, in order: set, append, remove (the one with
        // a name alone).
        assert_eq!(<HeaderOp as ComponentVariant>::CASES.len(), 3);
        assert_eq!(
            <HeaderOp as ComponentVariant>::CASES[2]
                .as_ref()
                .map(|c| c.size32),
            Some(8)
        );
    }

    /// A guest memory with a `continue` request decision of `n` header
    /// operations of `name` and `value` bytes each, at 0; its return area.
    fn continue_with(n: usize, name: usize, value: usize) -> (Vec<u8>, Vec<u8>) {
        let list_at = 64;
        let mut mem = vec![0u8; list_at + n * HEADER_OP_SIZE];
        for i in 0..n {
            let el = &mut mem[list_at + i * HEADER_OP_SIZE..][..HEADER_OP_SIZE];
            el[0] = 0; // set
            el[8..12].copy_from_slice(&(name as u32).to_le_bytes());
            el[16..20].copy_from_slice(&(value as u32).to_le_bytes());
        }
        let mut area = vec![0u8; 32];
        area[4..8].copy_from_slice(&(list_at as u32).to_le_bytes());
        area[8..12].copy_from_slice(&(n as u32).to_le_bytes());
        (mem, area)
    }

    #[test]
    fn too_many_headers_or_bytes_are_refused_before_lifting() {
        let (mem, area) = continue_with(1000, 10, 10);
        assert!(check::<RequestDecision>(&mem, &area).is_ok());
        let (mem, area) = continue_with(1001, 1, 1);
        let e = check::<RequestDecision>(&mem, &area).unwrap_err();
        assert_eq!(e.0, "1001 headers (at most 1000)");
        let (mem, area) = continue_with(100_000, 1, 1);
        assert!(check::<RequestDecision>(&mem, &area).is_err());
        // 2 x 600 KiB.
        let (mem, area) = continue_with(2, 300 << 10, 300 << 10);
        let e = check::<RequestDecision>(&mem, &area).unwrap_err();
        assert!(e.0.contains("bytes of header names and values"), "{e}");
    }

    #[test]
    fn response_headers_of_a_request_decision_are_checked_too() {
        // The first list is small; the second (response headers, 0.2.0) is
        // not. 0.1.0's decision has no second list.
        let (mut mem, mut area) = continue_with(1001, 1, 1);
        area[12..16].copy_from_slice(&64u32.to_le_bytes());
        area[16..20].copy_from_slice(&1001u32.to_le_bytes());
        area[8..12].copy_from_slice(&1u32.to_le_bytes());
        let e = check::<RequestDecision>(&mem, &area).unwrap_err();
        assert_eq!(e.0, "1001 headers (at most 1000)");
        assert!(check::<RequestDecision01>(&mem, &area).is_ok());
        area[16..20].copy_from_slice(&2u32.to_le_bytes());
        mem[64 + 16..64 + 20].copy_from_slice(&(2u32 << 20).to_le_bytes());
        assert!(check::<RequestDecision>(&mem, &area).is_err());
    }

    #[test]
    fn a_respond_decision_is_checked_too() {
        let mut mem = vec![0u8; 64 + 2000 * HEADER_SIZE];
        let mut area = vec![0u8; 32];
        area[0] = 1;
        area[8..12].copy_from_slice(&64u32.to_le_bytes());
        area[12..16].copy_from_slice(&2000u32.to_le_bytes());
        assert!(check::<RequestDecision>(&mem, &area).is_err());
        assert!(check::<RequestDecision01>(&mem, &area).is_err());
        assert!(check::<ResponseDecision>(&mem, &area).is_err());
        area[12..16].copy_from_slice(&2u32.to_le_bytes());
        mem[64 + 4..64 + 8].copy_from_slice(&(2u32 << 20).to_le_bytes());
        assert!(check::<ResponseDecision>(&mem, &area).is_err());
    }
}
