-- pgTAP: arguments (issue 15, class 4). NULL arguments that crashed backends are refused by name,
-- a NULL value still passes the CHECK-constraint functions, user values in error messages are cut
-- to 64 characters, and crm.upsert() of a new record without fields says what it needs.
-- (test/arg_sweep.sh sweeps every function; these pin down the behaviour of each fix.)
BEGIN;
SET client_min_messages = warning;
CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
  EXECUTE q;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RETURN h;
END $$;
SELECT plan(30);

-- NULL arguments that crashed the backend: refused, naming the argument (22004)
SELECT throws_ok($$SELECT crm.check_field(NULL, 'name', 'text', 'x')$$, '22004',
  'argument object of crm.check_field must not be null', 'check_field: NULL object is refused by name');
SELECT throws_ok($$SELECT crm.check_field('customer', 'name', NULL, 'x')$$, '22004',
  'argument type of crm.check_field must not be null', 'check_field: NULL type is refused by name');
SELECT throws_ok($$SELECT crm.check_picklist('customer', 'segment', 'x', NULL)$$, '22004',
  'argument allowed of crm.check_picklist must not be null', 'check_picklist: NULL list of allowed values is refused');
SELECT throws_ok($$SELECT crm.check_picklist('customer', NULL, 'x', '{x}')$$, '22004',
  'argument field of crm.check_picklist must not be null', 'check_picklist: NULL field is refused');
SELECT throws_ok($$SELECT crm.check_document(NULL, 'id_number', 'id_card', '11010519491231002X')$$, '22004',
  'argument object of crm.check_document must not be null', 'check_document: NULL object is refused');
SELECT throws_ok($$SELECT crm.check_encrypted('customer', NULL, 'x')$$, '22004',
  'argument field of crm.check_encrypted must not be null', 'check_encrypted: NULL field is refused');
SELECT throws_ok($$SELECT crm._shred_subject(NULL, 'r', NULL)$$, '22004',
  'argument customer_id of crm._shred_subject must not be null', '_shred_subject: NULL customer is refused');
SELECT throws_ok($$SELECT crm._shred_subject(1, NULL, NULL)$$, '22004',
  'argument reason of crm._shred_subject must not be null', '_shred_subject: NULL reason is refused');
SELECT throws_ok($$SELECT crm._rule_trigger(NULL, 'customer', 'insert', 'true')$$, '22004',
  'argument rule of crm._rule_trigger must not be null', '_rule_trigger: NULL rule is refused');
SELECT throws_ok($$SELECT crm._rule_call(NULL, 1, 'postgres')$$, '22004',
  'argument fn of crm._rule_call must not be null', '_rule_call: NULL function is refused');
SELECT throws_ok($$SELECT crm._rule_call('crm.today()', 1, NULL)$$, '22004',
  'argument definer of crm._rule_call must not be null', '_rule_call: NULL definer is refused');
SELECT throws_ok($$SELECT crm._workflow_trigger('w', 'customer', 'segment', NULL)$$, '22004',
  'argument install of crm._workflow_trigger must not be null', '_workflow_trigger: NULL install is refused');
SELECT throws_ok($$SELECT crm.audit_verify(NULL::jsonb)$$, '22004',
  'argument digest of crm.audit_verify must not be null', 'audit_verify(jsonb): NULL digest is refused');
SELECT is(crm._run_rule(NULL), NULL, '_run_rule is STRICT: NULL in, NULL out');
SELECT lives_ok($$SELECT crm._audit_detach(NULL)$$, '_audit_detach is STRICT: NULL does nothing');

-- a NULL value passes the CHECK-constraint functions (a NULL field is checked by "required")
SELECT is(crm.check_field('customer', 'mobile', 'cn_mobile', NULL), true, 'check_field: a NULL value passes');
SELECT is(crm.check_picklist('customer', 'segment', NULL, '{a}'), true, 'check_picklist: a NULL value passes');
SELECT is(crm.check_document('customer', 'id_number', NULL, NULL), true, 'check_document: a NULL value passes');
SELECT is(crm.check_encrypted('customer', 'passport_no', NULL), true, 'check_encrypted: a NULL value passes');

-- an unknown event for a rule trigger is an ordinary error, not XX000
SELECT throws_ok($$SELECT crm._rule_trigger('r', 'customer', 'schedule', 'true')$$, '22023', NULL,
  '_rule_trigger: an event without a trigger is 22023, not an internal error');
SELECT throws_ok($$SELECT crm._workflow_trigger(repeat('w', 60), 'customer', 'segment', true)$$, '42622', NULL,
  '_workflow_trigger: a name whose trigger name would be truncated is refused');

-- user values in messages: 64 characters and "..."
SELECT is(crm._short(repeat('x', 100)), repeat('x', 64) || '...', 'crm._short cuts at 64 characters');
SELECT is(crm._short('short'::text), 'short', 'crm._short leaves a short value alone');
SELECT is(crm._short(NULL::text), NULL, 'crm._short(NULL) is NULL (RAISE still prints <NULL>)');
SELECT is(crm._short(repeat('中', 70)), repeat('中', 64) || '...', 'crm._short counts characters, not bytes');
SELECT is(crm._short(12345::bigint), '12345', 'crm._short takes any type');
SELECT throws_like($$SELECT crm.mask('x', repeat('m', 1048576))$$,
  'unknown mask "' || repeat('m', 64) || '..."%', 'a 1 MB mask name comes back as 64 characters (C)');
SELECT throws_like($$SELECT crm.drop_object(repeat('o', 1048576))$$,
  '%' || repeat('o', 64) || '...%', 'a 1 MB object name comes back as 64 characters (PL/pgSQL)');

-- crm.upsert of a new record with no fields: what is missing, not a syntax error
SELECT throws_ok($$SELECT crm.upsert('customer', 'core', 'NEW-1', '{}')$$, '22023',
  'upsert into customer of a new record (core NEW-1) needs its fields in attrs',
  'upsert with {} for an unknown source id says a new record needs its fields');
SELECT matches(pg_temp.hint_of($$SELECT crm.upsert('customer', 'core', 'NEW-1', '{}')$$),
  'required fields: .*name', 'and its hint names the required fields');

SELECT * FROM finish();
ROLLBACK;
