-- Receive counters are written monotonically (a stored counter is never
-- lowered); `agents reset-counters` and a new key for the ID start a new
-- epoch, and a write carrying an older epoch is ignored.
ALTER TABLE agents ADD COLUMN recv_epoch INTEGER NOT NULL DEFAULT 0;
