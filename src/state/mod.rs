//! The typed state shared by the desired side (lowered from the model) and the
//! observed side (read from a backend), so that `plan::diff` compares like with like.
