"""A submission's path, in order: admission (admission, admission_wire,
admission_child), classify (pure), the sequencer (its numbered protocol block is
the one place the durability story is told), outcomes, commit deadlines."""
