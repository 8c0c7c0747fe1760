-- pgTAP: encryption at rest. Only ciphertext in the heap (read raw by the superuser, and the
-- table's file itself); readers get plaintext or their mask through the hook; the write guard,
-- validation and the CHECK constraint on the way in; blind index search; crypto-shredding.
-- (Key-file handling, rotation, dumps and restores of old dumps: test/crypt_keys.sh.)
BEGIN;
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['cr_rm', 'cr_rm2', 'cr_tl', 'cr_comp', 'cr_plain'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN EXECUTE format('CREATE ROLE %I LOGIN', r); END IF;
  END LOOP;
END $$;
GRANT crm_user TO cr_plain;
CREATE TEMP TABLE p (k text PRIMARY KEY, id bigint, v text);
GRANT ALL ON p TO PUBLIC;
INSERT INTO p (k, id) SELECT 'hq', crm.add_org_unit('CR HQ');
INSERT INTO p (k, id) SELECT 'tl', crm.add_principal('cr_tl', 'TL', (SELECT id FROM p WHERE k = 'hq'), ARRAY['team_lead']);
INSERT INTO p (k, id) SELECT 'rm', crm.add_principal('cr_rm', 'RM', (SELECT id FROM p WHERE k = 'hq'), ARRAY['rm'], (SELECT id FROM p WHERE k = 'tl'));
INSERT INTO p (k, id) SELECT 'rm2', crm.add_principal('cr_rm2', 'RM2', (SELECT id FROM p WHERE k = 'hq'), ARRAY['rm'], (SELECT id FROM p WHERE k = 'tl'));
INSERT INTO p (k, id) SELECT 'comp', crm.add_principal('cr_comp', 'Compliance', (SELECT id FROM p WHERE k = 'hq'), ARRAY['compliance']);
CREATE FUNCTION pg_temp.as1(persona text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  BEGIN
    EXECUTE format('SET LOCAL ROLE %I', persona);
    EXECUTE q INTO r;
    RAISE EXCEPTION USING ERRCODE = 'P0099', MESSAGE = coalesce(r, '<null>');
  EXCEPTION WHEN SQLSTATE 'P0099' THEN RETURN SQLERRM;
  END;
END $$;
CREATE FUNCTION pg_temp.err(persona text, q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    IF persona IS NOT NULL THEN EXECUTE format('SET LOCAL ROLE %I', persona); END IF;
    EXECUTE q;
    RAISE EXCEPTION USING ERRCODE = 'P0099';
  EXCEPTION WHEN SQLSTATE 'P0099' THEN RETURN 'ok';
            WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM;
  END;
END $$;

SELECT plan(54);

-- defining encrypted fields
SELECT is((SELECT ok FROM crm.keyring_status()), true, 'the test cluster has a usable keyring');
SELECT is(crm.add_field('customer', 'cr_passport', 'text', '{"encrypted": true, "searchable": true, "sensitivity": "sensitive"}'),
          'cr_passport', 'an encrypted, searchable text field');
SELECT is(crm.add_field('customer', 'cr_idno', 'cn_id_number', '{"encrypted": true, "sensitivity": "sensitive"}'),
          'cr_idno', 'an encrypted cn_id_number field (validated before it is encrypted)');
SELECT is(crm.add_field('customer', 'cr_card', 'bank_card', '{"encrypted": true, "unique": true, "sensitivity": "sensitive"}'),
          'cr_card', 'an encrypted unique field (unique through its blind index)');
SELECT is(pg_temp.err(NULL, $q$SELECT crm.add_field('customer', 'cr_n', 'integer', '{"encrypted": true}')$q$),
          '0A000 field customer.cr_n of type integer cannot be encrypted', 'only text-like fields can be encrypted');
SELECT is(pg_temp.err(NULL, $q$SELECT crm.add_field('customer', 'cr_d', 'text', '{"encrypted": true, "default": "x"}')$q$),
          '0A000 encrypted field customer.cr_d cannot have a default', 'an encrypted field has no plaintext default');
SELECT is(pg_temp.err(NULL, $q$SELECT crm.add_field('customer', 'cr_s', 'text', '{"searchable": true}')$q$),
          '22023 option "searchable" of field customer.cr_s applies only to encrypted fields', 'searchable needs encrypted');
SELECT is((SELECT encrypted FROM crm.fields WHERE object = 'customer' AND name = 'cr_idno'), true, 'crm.fields shows it encrypted');

-- writing: the owner RM writes plaintext
SET LOCAL ROLE cr_rm;
WITH x AS (INSERT INTO crm_data.customer (name, cr_passport, cr_idno, cr_card)
           VALUES ('李四', 'E12345678', '11010519491231002X', '6222020200112233446') RETURNING id, cr_passport, cr_idno)
INSERT INTO p (k, id, v) SELECT 'c', id, cr_passport || '|' || cr_idno FROM x;
INSERT INTO crm_data.customer (name, cr_passport) VALUES ('王五', 'G99887766');
RESET ROLE;
SELECT is((SELECT v FROM p WHERE k = 'c'), 'E12345678|11010519491231002X', 'RETURNING gives the writer its plaintext');

-- the heap holds ciphertext only (superuser without a principal: no masking, no decryption)
SELECT ok((SELECT cr_passport LIKE 'crm1$%' AND cr_idno LIKE 'crm1$%' AND cr_card LIKE 'crm1$%'
             FROM crm_data.customer WHERE id = (SELECT id FROM p WHERE k = 'c')), 'stored values are crm ciphertext');
SELECT is((SELECT position(convert_to('E12345678', 'UTF8') IN convert_to(cr_passport, 'UTF8'))
             + position(convert_to('1949', 'UTF8') IN convert_to(cr_idno, 'UTF8'))
             FROM crm_data.customer WHERE id = (SELECT id FROM p WHERE k = 'c')), 0, 'read as bytes, no plaintext in the column');
SELECT ok((SELECT cr_passport <> (SELECT cr_passport FROM crm_data.customer c2 WHERE c2.name = '王五')
             FROM crm_data.customer WHERE id = (SELECT id FROM p WHERE k = 'c')), 'two values, two ciphertexts');
CHECKPOINT;
SELECT is(position(convert_to('E12345678', 'UTF8') IN pg_read_binary_file(pg_relation_filepath('crm_data.customer'))), 0,
          'the table''s file on disk holds no plaintext of the encrypted field');
SELECT ok(position(convert_to('李四', 'UTF8') IN pg_read_binary_file(pg_relation_filepath('crm_data.customer'))) > 0,
          '(while a plain field of the same row is there: the file check can see text)');
SELECT ok((SELECT customer_id = (SELECT id FROM p WHERE k = 'c') AND wrapped IS NOT NULL AND master_key_id <> ''
             FROM crm.data_key WHERE subject = 'customer:' || (SELECT id FROM p WHERE k = 'c')),
          'the customer has its own data key, stored wrapped');

-- reading through the hook, by level
SELECT is(pg_temp.as1('cr_rm', format('SELECT cr_passport || ''|'' || cr_idno || ''|'' || cr_card FROM crm_data.customer WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          'E12345678|11010519491231002X|6222020200112233446', 'the owner reads plaintext');
SELECT is(pg_temp.as1('cr_comp', format('SELECT cr_idno FROM crm_data.customer WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          '11010519491231002X', 'compliance reads plaintext');
SELECT is(pg_temp.as1('cr_tl', format('SELECT cr_idno || ''|'' || cr_passport || ''|'' || cr_card FROM crm_data.customer WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          '110105********002X|****|6222 **** **** 3446', 'the team lead gets the masks');
SELECT is(pg_temp.as1('cr_tl', format('SELECT row_to_json(c)->>''cr_idno'' FROM crm_data.customer c WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          '110105********002X', 'whole-row reference: masked');
SELECT is(pg_temp.as1('cr_tl', format('SELECT (SELECT x FROM (SELECT cr_idno AS x FROM crm_data.customer WHERE id = %s) s)', (SELECT id FROM p WHERE k = 'c'))),
          '110105********002X', 'subquery: masked');
SELECT crm.set_field_access('customer', 'cr_idno', 'team_lead', 'hidden', 'write');
SELECT is(pg_temp.as1('cr_tl', format('SELECT cr_idno FROM crm_data.customer WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          '<null>', 'hidden: NULL');
SELECT crm.reset_field_access('customer', 'cr_idno', 'team_lead');

-- no inference, no index for the masked
SELECT is(pg_temp.as1('cr_tl', $q$SELECT count(*) FROM crm_data.customer WHERE cr_idno = '11010519491231002X'$q$), '0',
          'masked: WHERE on the real value finds nothing');
SELECT is(pg_temp.as1('cr_tl', $q$SELECT count(*) FROM crm_data.customer WHERE cr_passport LIKE 'E1%'$q$), '0',
          'masked: LIKE on the real value finds nothing');
SELECT is(pg_temp.as1('cr_tl', $q$SELECT max(cr_passport) FROM crm_data.customer$q$), '****', 'masked: max() sees masks');
SELECT is(pg_temp.as1('cr_tl', $q$SELECT count(*) FROM crm.find('customer', 'cr_passport', 'E12345678')$q$), '0',
          'masked: crm.find finds nothing');
SELECT is(pg_temp.as1('cr_tl', $q$SELECT count(*) FROM crm_data.customer WHERE crm_bidx_cr_passport IS NOT NULL$q$), '0',
          'masked: the blind index column reads as NULL');
SELECT is(pg_temp.as1('cr_rm', $q$SELECT string_agg(id::text || ':' || (record->>'cr_passport'), ',') FROM crm.find('customer', 'cr_passport', ' e12345678 ')$q$),
          (SELECT id FROM p WHERE k = 'c') || ':E12345678', 'the owner finds it through the blind index (normalised)');
SELECT is(pg_temp.as1('cr_rm', $q$SELECT count(*) FROM crm.find('customer', 'cr_passport', 'E00000000')$q$), '0', 'no match, no row');
SELECT is(pg_temp.as1('cr_rm2', $q$SELECT count(*) FROM crm.find('customer', 'cr_passport', 'E12345678')$q$), '0',
          'another RM: row security still applies to crm.find');
SELECT is(pg_temp.err('cr_rm', $q$SELECT * FROM crm.find('customer', 'name', 'x')$q$),
          '0A000 field customer.name is not searchable', 'crm.find on a field without a blind index');

-- decrypting by hand
INSERT INTO p (k, v) SELECT 'ct', cr_idno FROM crm_data.customer WHERE id = (SELECT id FROM p WHERE k = 'c');
SELECT is(pg_temp.as1('cr_tl', format('SELECT crm._decrypt(%L, ''customer'', ''cr_idno'', 0)', (SELECT v FROM p WHERE k = 'ct'))),
          '110105********002X', 'a stolen ciphertext decrypted by a masked principal gives the mask');
SELECT is(pg_temp.as1('cr_tl', format('SELECT crm._decrypt(%L, ''customer'', ''cr_idno'', %s)', (SELECT v FROM p WHERE k = 'ct'), (SELECT id FROM p WHERE k = 'tl'))),
          '110105********002X', '... even when it passes its own id as the owner');
SELECT is(pg_temp.err('cr_plain', format('SELECT crm._decrypt(%L, ''customer'', ''cr_idno'', 0)', (SELECT v FROM p WHERE k = 'ct'))),
          '42501 permission denied to decrypt field values', 'a login that is no principal cannot decrypt');
SELECT is(pg_temp.err('cr_tl', format('SELECT crm._decrypt(%L, ''customer'', ''cr_passport'', 0)', (SELECT v FROM p WHERE k = 'ct'))),
          'XX001 encrypted value of field customer.cr_passport does not verify', 'a value moved to another field does not verify');

-- writing: guard, validation, unchanged values
SELECT is(pg_temp.err('cr_tl', format('UPDATE crm_data.customer SET cr_idno = ''11010519491231002X'' WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          '42501 permission denied to write field customer.cr_idno', 'the team lead cannot write it (not even the same value)');
SELECT is(pg_temp.err('cr_rm', format('UPDATE crm_data.customer SET cr_idno = ''110105194912310021'' WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          '23514 invalid cn_id_number in field customer.cr_idno: the check character does not match', 'the plaintext is validated before it is encrypted');
UPDATE p SET v = (SELECT cr_idno FROM crm_data.customer WHERE id = (SELECT id FROM p WHERE k = 'c')) WHERE k = 'ct';
SET LOCAL ROLE cr_rm;
UPDATE crm_data.customer SET segment = 'affluent' WHERE id = (SELECT id FROM p WHERE k = 'c');
UPDATE crm_data.customer SET cr_idno = '11010519491231002X' WHERE id = (SELECT id FROM p WHERE k = 'c');
RESET ROLE;
SELECT is((SELECT cr_idno FROM crm_data.customer WHERE id = (SELECT id FROM p WHERE k = 'c')), (SELECT v FROM p WHERE k = 'ct'),
          'an UPDATE of another field, or of the same plaintext, keeps the stored ciphertext');
SET LOCAL ROLE cr_rm;
UPDATE crm_data.customer SET cr_passport = 'E22223333' WHERE id = (SELECT id FROM p WHERE k = 'c');
RESET ROLE;
SELECT is(pg_temp.as1('cr_rm', $q$SELECT count(*) FROM crm.find('customer', 'cr_passport', 'E22223333')$q$), '1', 'the blind index follows a new value');
SELECT is(pg_temp.as1('cr_rm', $q$SELECT count(*) FROM crm.find('customer', 'cr_passport', 'E12345678')$q$), '0', '... and forgets the old one');
SELECT is(pg_temp.err('cr_rm', format('UPDATE crm_data.customer SET crm_bidx_cr_passport = ''\x00'' WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))), 'ok',
          'writing the blind index column directly is allowed but ...');
SELECT is(pg_temp.as1('cr_rm', $q$SELECT count(*) FROM crm.find('customer', 'cr_passport', 'E22223333')$q$), '1', '... it is recomputed from the value');
SELECT is(pg_temp.err('cr_rm', $q$INSERT INTO crm_data.customer (name, cr_card) VALUES ('dup', '6222020200112233446')$q$),
          '23505 duplicate key value violates unique constraint "customer_cr_card_bidx_' || left(md5('customer.cr_card'), 4) || '"',
          'unique encrypted field: a duplicate is refused through the blind index');

-- the maintenance role: plaintext is encrypted too; disabling the trigger cannot store plaintext
INSERT INTO crm_data.customer (owner_id, org_unit_id, name, cr_passport)
  VALUES ((SELECT id FROM p WHERE k = 'rm'), (SELECT id FROM p WHERE k = 'hq'), 'by superuser', 'S1234567');
SELECT ok((SELECT cr_passport LIKE 'crm1$%' FROM crm_data.customer WHERE name = 'by superuser'), 'a superuser''s plaintext is encrypted on the way in');
SET LOCAL session_replication_role = replica;
INSERT INTO crm_data.customer (owner_id, org_unit_id, name, cr_passport)
  SELECT owner_id, org_unit_id, 'replica', 'R1234567' FROM crm_data.customer WHERE name = 'by superuser';
RESET session_replication_role;
SELECT ok((SELECT cr_passport LIKE 'crm1$%' FROM crm_data.customer WHERE name = 'replica'),
          'session_replication_role = replica: still encrypted (the trigger fires ALWAYS)');
SELECT is(pg_temp.err(NULL, 'ALTER TABLE crm_data.customer DISABLE TRIGGER crm_write_guard'),
          '42501 disabling trigger crm_write_guard is not allowed', 'the write trigger cannot be disabled');
-- a superuser switching it off in the catalog (past every guard) still cannot store plaintext
UPDATE pg_trigger SET tgenabled = 'D' WHERE tgname = 'crm_write_guard' AND tgrelid = 'crm_data.customer'::regclass;
ALTER TABLE crm_data.customer SET (fillfactor = 100);  -- (makes the change seen)
SELECT is(pg_temp.err(NULL, $q$INSERT INTO crm_data.customer (owner_id, org_unit_id, name, cr_passport) SELECT owner_id, org_unit_id, 'raw', 'P1234567' FROM crm_data.customer WHERE name = 'by superuser'$q$),
          '23514 field customer.cr_passport is encrypted: it stores only ciphertext', 'with the trigger disabled, the CHECK refuses plaintext');
ALTER TABLE crm_data.customer ENABLE ALWAYS TRIGGER crm_write_guard;
SELECT is(pg_temp.err(NULL, format('UPDATE crm_data.customer SET cr_passport = %L WHERE name = ''by superuser''', (SELECT v FROM p WHERE k = 'ct'))),
          'XX001 encrypted value of field customer.cr_passport does not verify', 'a ciphertext of another field cannot be planted');

-- crypto-shredding
SELECT is(pg_temp.err('cr_rm', format('SELECT crm.forget_subject(%s, ''asked'')', (SELECT id FROM p WHERE k = 'c'))),
          '42501 permission denied to forget customer ' || (SELECT id FROM p WHERE k = 'c'), 'an RM cannot forget a customer');
SELECT is(pg_temp.err('cr_comp', format('SELECT crm.forget_subject(%s, '' '')', (SELECT id FROM p WHERE k = 'c'))),
          '22023 forgetting customer ' || (SELECT id FROM p WHERE k = 'c') || ' needs a reason', 'a reason is required');
SET LOCAL ROLE cr_comp;
SELECT crm.forget_subject((SELECT id FROM p WHERE k = 'c'), 'PIPL erasure request 2026-17');
RESET ROLE;
SELECT is(pg_temp.as1('cr_rm', format('SELECT cr_passport || ''|'' || cr_idno || ''|'' || name FROM crm_data.customer WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          '[erased]|[erased]|李四', 'after forget_subject the encrypted fields read as [erased] (plain fields untouched)');
SELECT is(pg_temp.as1('cr_rm', $q$SELECT count(*) FROM crm.find('customer', 'cr_passport', 'E22223333')$q$), '0',
          'a forgotten value cannot be found through the blind index any more');
SELECT is(pg_temp.as1('cr_rm', $q$SELECT string_agg(name || '=' || cr_passport, ',') FROM crm_data.customer WHERE name = '王五'$q$),
          '王五=G99887766', 'other customers are unaffected');
SELECT is(pg_temp.err('cr_rm', format('UPDATE crm_data.customer SET cr_passport = ''E55556666'' WHERE id = %s', (SELECT id FROM p WHERE k = 'c'))),
          '55000 cannot store a new value in encrypted field customer.cr_passport: its key was shredded', 'a forgotten customer takes no new encrypted values');
SELECT ok((SELECT wrapped IS NULL AND shred_reason = 'PIPL erasure request 2026-17' AND shredded_by = (SELECT id FROM p WHERE k = 'comp')
             FROM crm.data_key WHERE subject = 'customer:' || (SELECT id FROM p WHERE k = 'c')), 'the wrapped key is gone; who and why are kept');

SELECT * FROM finish();
ROLLBACK;
