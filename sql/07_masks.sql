-- Masks: every format, NULL, empty, short and multibyte values.
\set VERBOSITY terse
SELECT crm.mask_id_number('11010519491231002X'), crm.mask_id_number('110101199001011234'),
       crm.mask_mobile('13812345678'), crm.mask_email('zhangsan@example.com'),
       crm.mask_bank_card('6222021234567890128'), crm.mask_bank_card('4111111111111111'), crm.mask_full('anything');
SELECT v, crm.mask_name(v) FROM (VALUES ('张三'), ('张三丰'), ('欧阳娜娜'), ('John Smith'), ('Li  Na'), ('张'), ('Ö Åström'), (''), (NULL)) t(v);
-- short values reveal nothing more than long ones
SELECT v, crm.mask_id_number(v) AS id, crm.mask_mobile(v) AS mobile, crm.mask_bank_card(v) AS card, crm.mask_email(v) AS email, crm.mask_full(v) AS full
  FROM (VALUES (''), ('1'), ('12345'), ('E12345678'), ('1381234567'), ('@x.cn'), ('a@x.cn'), ('noat'), (NULL)) t(v);
-- multibyte characters are counted as characters
SELECT crm.mask_id_number('一二三四五六七八九十一二三四五六七八'), crm.mask_mobile('一二三四五六七八九十一'), crm.mask_email('张三@例子.中国');
SELECT kind, crm.mask('13812345678', kind) FROM unnest(ARRAY['none', 'full', 'id_number', 'mobile', 'name', 'email', 'bank_card', 'hidden']) kind;
SELECT crm.mask(NULL, 'mobile') IS NULL AS null_stays_null;
SELECT crm.mask('x', 'stars');
