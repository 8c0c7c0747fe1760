------------------------------------------------------------------------------------------------
-- Masks (C): each format callable by anyone; characters, not bytes; NULL stays NULL.
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm.mask_id_number(text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'crm_mask_id_number';
CREATE FUNCTION crm.mask_mobile(text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'crm_mask_mobile';
CREATE FUNCTION crm.mask_name(text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'crm_mask_name';
CREATE FUNCTION crm.mask_email(text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'crm_mask_email';
CREATE FUNCTION crm.mask_bank_card(text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'crm_mask_bank_card';
CREATE FUNCTION crm.mask_full(text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'crm_mask_full';
CREATE FUNCTION crm.mask(value text, mask text) RETURNS text
  LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_mask';
COMMENT ON FUNCTION crm.mask(text, text) IS 'apply a mask by name: none, full, id_number, mobile, name, email, bank_card, hidden';
