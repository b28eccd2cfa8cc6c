//! Applying a plan through a backend: lock, ledger, undo journal, rollback.
