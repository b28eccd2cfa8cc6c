//! Plans: the pure diff of desired against observed state, ordered and minimal.
