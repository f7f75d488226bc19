-- Which collector process last heard each agent (`serve --instance-name`,
-- default the host name): with several collectors on one store, where an
-- agent is connected.
ALTER TABLE agents ADD COLUMN collector TEXT;
