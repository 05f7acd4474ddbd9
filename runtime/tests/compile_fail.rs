//! Compile-fail tests (trybuild): the slices the buffer hands out borrow the
//! reader or writer they come from, so none outlives the buffer or is used
//! after the `consume`, `produce` or `finish` that gives its region to the
//! other side, and the caller-chosen-lifetime variants are not public.
//! Each `tests/compile_fail/*.rs` must fail to compile with the error in its
//! `.stderr` (regenerate with `TRYBUILD=overwrite` after checking them).

#[test]
fn buffer_slices_are_tied_to_their_borrows() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
