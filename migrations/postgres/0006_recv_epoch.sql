-- Receive counters are written monotonically by every collector (a stored
-- counter is never lowered), so that a message accepted by one collector is
-- a replay for all of them. The two ways to lower them on purpose,
-- `agents reset-counters` and a new key for the ID, start a new epoch: a
-- write carrying an older epoch is ignored, one carrying a newer epoch
-- replaces the counters.
ALTER TABLE agents ADD COLUMN recv_epoch BIGINT NOT NULL DEFAULT 0;
