//! The receiving side: what a subscriber measures about each track it gets. Pure: packets
//! come in with their arrival time, windows close when the caller says.

pub mod frames;
pub mod freeze;
pub mod track;

#[cfg(test)]
mod tests;
