//! A tiny size-class allocator for the wasm build, replacing std's dlmalloc
//! (about 7 KB of code, 3 KB gzipped, a tenth of the SDK). The SDK allocates
//! little and briefly (strings of a few KB), so power-of-two classes with free
//! lists are enough: freed blocks are reused for the same class, never merged.
//! Memory is never returned, which wasm cannot do anyway.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

const PAGE: usize = 65_536;
const CLASSES: usize = usize::BITS as usize;

pub struct SizeClassAlloc {
    state: UnsafeCell<State>,
}

struct State {
    /// Head of the free list of each class (blocks of `1 << class` bytes); 0 = empty.
    free: [usize; CLASSES],
    /// Bump region inside the last grown pages.
    next: usize,
    end: usize,
}

// wasm32-unknown-unknown without atomics has one thread.
unsafe impl Sync for SizeClassAlloc {}

impl SizeClassAlloc {
    pub const fn new() -> Self {
        SizeClassAlloc {
            state: UnsafeCell::new(State {
                free: [0; CLASSES],
                next: 0,
                end: 0,
            }),
        }
    }
}

fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(8).checked_next_power_of_two()?;
    Some(size.trailing_zeros() as usize)
}

unsafe impl GlobalAlloc for SizeClassAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return core::ptr::null_mut();
        };
        let s = &mut *self.state.get();
        let head = s.free[class];
        if head != 0 {
            s.free[class] = *(head as *const usize);
            return head as *mut u8;
        }
        let size = 1usize << class;
        // Blocks are aligned to their own size (all alignments are powers of two).
        let start = (s.next + size - 1) & !(size - 1);
        if start < s.next || start + size > s.end || s.end == 0 {
            let pages = size.div_ceil(PAGE);
            let old = core::arch::wasm32::memory_grow(0, pages);
            if old == usize::MAX {
                return core::ptr::null_mut();
            }
            let base = old * PAGE;
            // Keep the bump region going when the new pages follow it.
            if s.end != base {
                s.next = base;
            }
            s.end = base + pages * PAGE;
            return self.alloc(layout);
        }
        s.next = start + size;
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout) {
            let s = &mut *self.state.get();
            *(ptr as *mut usize) = s.free[class];
            s.free[class] = ptr as usize;
        }
    }
}
