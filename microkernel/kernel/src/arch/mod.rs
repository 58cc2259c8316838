//! Hardware layers. Only x86-64 exists; Intel VMX and AMD SVM backends will sit below it.

pub mod x86_64;
