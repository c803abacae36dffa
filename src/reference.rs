//! The plain-SQL reference implementation (sql/reference/), the oracle for
//! differential tests and case (c) of `settle bench`.
