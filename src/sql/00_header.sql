-- crm install script, assembled by the Makefile from src/sql/*.sql in name order.
\echo Use "CREATE EXTENSION crm CASCADE" to load this file. \quit

-- Group roles are cluster-wide: create them only when missing, so a second database installs too.
DO $roles$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['crm_user', 'crm_app', 'crm_auditor', 'crm_admin', 'crm_connector'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
      EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END
$roles$;

-- Business tables live in crm_data; it is created by crm.init() so that it is not an extension
-- member (see docs/backups.md: pg_dump keeps crm_data like any schema of the database).
GRANT USAGE ON SCHEMA crm TO PUBLIC;

------------------------------------------------------------------------------------------------
-- C functions: module state and identity
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm.preloaded() RETURNS boolean
  LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_preloaded';
COMMENT ON FUNCTION crm.preloaded() IS 'true when crm was loaded through shared_preload_libraries';

CREATE FUNCTION crm._creating_extension() RETURNS boolean
  LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'crm_creating_extension';

-- A value (a user's, of any type) as text cut to 64 characters, for error messages: RAISE ... crm._short(x).
CREATE FUNCTION crm._short(value anyelement) RETURNS text   -- STABLE: output functions follow DateStyle, TimeZone
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_short_sql';

-- PARALLEL RESTRICTED: act_as state lives in the leader backend only.
CREATE FUNCTION crm.current_principal() RETURNS bigint
  LANGUAGE c STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_current_principal_sql';
COMMENT ON FUNCTION crm.current_principal() IS 'the acting principal: set by crm.act_as() in this transaction, else the principal of the current login (NULL when none)';

CREATE FUNCTION crm.acting_as() RETURNS bigint
  LANGUAGE c STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'crm_acting_as';

CREATE FUNCTION crm.act_as(principal bigint) RETURNS bigint
  LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'crm_act_as';
CREATE FUNCTION crm.act_as(login text) RETURNS bigint
  LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'crm_act_as_login';
COMMENT ON FUNCTION crm.act_as(bigint) IS 'for roles granted crm_app: act as a principal until the end of the transaction';

------------------------------------------------------------------------------------------------
-- C functions: names and validators
------------------------------------------------------------------------------------------------
CREATE FUNCTION crm.check_name(kind text, name text) RETURNS text
  LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_check_name';

CREATE FUNCTION crm.cn_id_number_valid(text) RETURNS boolean
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_cn_id_number_valid';
CREATE FUNCTION crm.uscc_valid(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_uscc_valid';
CREATE FUNCTION crm.bank_card_valid(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_bank_card_valid';
CREATE FUNCTION crm.cn_mobile_valid(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_cn_mobile_valid';
CREATE FUNCTION crm.email_valid(text) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_email_valid';
CREATE FUNCTION crm.validation_problem(type text, value text) RETURNS text
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_validation_problem';
COMMENT ON FUNCTION crm.validation_problem(text, text) IS 'why a value is not a valid cn_id_number, uscc, bank_card, cn_mobile or email (NULL when it is)';

CREATE FUNCTION crm.check_field(object text, field text, type text, value text) RETURNS boolean
  LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_check_field';
CREATE FUNCTION crm.check_picklist(object text, field text, value text, allowed text[]) RETURNS boolean
  LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_check_picklist';
CREATE FUNCTION crm.check_document(object text, field text, document_type text, value text) RETURNS boolean
  LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_check_document';

CREATE FUNCTION crm.cn_id_number_birthday(text) RETURNS date
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_cn_id_number_birthday';
CREATE FUNCTION crm.cn_id_number_gender(text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_cn_id_number_gender';
CREATE FUNCTION crm.make_cn_id_number(region text, birthday date, seq integer) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_make_cn_id_number';
CREATE FUNCTION crm.make_uscc(base text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'crm_make_uscc';

-- Domains for users' own tables; managed tables use CHECK constraints that name the field.
CREATE DOMAIN crm.cn_id_number AS text CHECK (crm.cn_id_number_valid(VALUE));
CREATE DOMAIN crm.uscc AS text CHECK (crm.uscc_valid(VALUE));
CREATE DOMAIN crm.bank_card AS text CHECK (crm.bank_card_valid(VALUE));
CREATE DOMAIN crm.cn_mobile AS text CHECK (crm.cn_mobile_valid(VALUE));
CREATE DOMAIN crm.email AS text CHECK (crm.email_valid(VALUE));

CREATE FUNCTION crm.stamp() RETURNS trigger
  LANGUAGE c AS 'MODULE_PATHNAME', 'crm_stamp';
