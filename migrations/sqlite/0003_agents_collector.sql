-- Which collector process last heard each agent (`serve --instance-name`).
ALTER TABLE agents ADD COLUMN collector TEXT;
