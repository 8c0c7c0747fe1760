-- Validating types: GB 11643 ID numbers, GB 32100 USCC, Luhn bank cards, mainland mobiles, e-mail.
\set VERBOSITY terse
SELECT v, crm.cn_id_number_valid(v) AS valid, crm.validation_problem('cn_id_number', v) AS problem
  FROM (VALUES
    ('11010519491231002X'),   -- check character X
    ('110105194912310021'),   -- same body, wrong check digit
    ('11010519491231002x'),   -- lower-case x
    ('440524188001010014'),   -- born 1880: before 1900
    ('110101200002290018'),   -- 29 Feb 2000: leap year (divisible by 400)
    ('110101190002290017'),   -- 29 Feb 1900: not a leap year
    ('110101199602290016'),   -- 29 Feb 1996: leap year
    ('110101199702290012'),   -- 29 Feb 1997: not a leap year
    ('110101199013320011'),   -- month 13
    ('990101199001010011'),   -- province 99 does not exist
    ('1101011990010100'),     -- too short
    ('11010119900101001A'),   -- bad last character
    ('1101A1199001010011'),   -- letter in the body
    ('110101209901010011'),   -- born in the future
    ('')) t(v);
-- the check digit of every computed number verifies, for each possible check character
SELECT right(n, 1) AS check_char, count(*) AS numbers, bool_and(crm.cn_id_number_valid(n)) AS all_valid
  FROM (SELECT crm.make_cn_id_number('110101', date '1980-01-01' + d, s) AS n
          FROM generate_series(0, 60) d, generate_series(0, 20) s) x
 GROUP BY 1 ORDER BY 1;
SELECT crm.cn_id_number_birthday('11010519491231002X'), crm.cn_id_number_gender('11010519491231002X'),
       crm.cn_id_number_gender('110101200002290018');
SELECT crm.cn_id_number_birthday('110101199702290012');
SELECT crm.make_cn_id_number('110101', date '2000-02-29', 1);
SELECT crm.make_cn_id_number('000000', date '2000-01-01', 1);
SELECT crm.make_cn_id_number('110101', date '2000-02-29', 1000);
SELECT v, crm.uscc_valid(v) AS valid, crm.validation_problem('uscc', v) AS problem
  FROM (VALUES
    ('91350100M000100Y43'),   -- a published code
    ('91350100M000100Y44'),   -- wrong check character
    ('91350100M000100I43'),   -- I is not in the alphabet
    ('9135010OM000100Y43'),   -- O is not in the alphabet
    ('91350100M000100Y4'),    -- too short
    ('913501OOM000100Y43')) t(v);
SELECT crm.make_uscc('91350100M000100Y4'), crm.uscc_valid(crm.make_uscc('91110000' || '600037341'));
SELECT crm.make_uscc('91350100M000100I4');
SELECT v, crm.bank_card_valid(v) AS valid, crm.validation_problem('bank_card', v) AS problem
  FROM (VALUES
    ('6222020200112345678'),  -- not Luhn-valid
    ('6222021234567890128'),  -- 19 digits, Luhn
    ('4111111111111111'),     -- 16 digits, Luhn
    ('4111111111111112'),
    ('411111111111'),         -- 12 digits (Luhn-invalid)
    ('79927398713'),          -- Luhn-valid but 11 digits
    ('4111 1111 1111 1111'),
    ('41111111111111111111')) t(v);
SELECT v, crm.cn_mobile_valid(v) AS valid, crm.validation_problem('cn_mobile', v) AS problem
  FROM (VALUES ('13812345678'), ('19912345678'), ('12812345678'), ('+8613812345678'), ('138-1234-5678'), ('1381234567')) t(v);
SELECT v, crm.email_valid(v) AS valid, crm.validation_problem('email', v) AS problem
  FROM (VALUES ('zhang.san@example.com'), ('a@b.cn'), ('no-at.example.com'), ('two@@example.com'),
               ('@example.com'), ('x@localhost'), ('x@.example.com'), ('x@example..com'), ('x y@example.com'),
               ('张三@example.com')) t(v);
SELECT crm.validation_problem('iban', 'DE89370400440532013000');
-- domains for users' own tables, usable in indexes and COPY
CREATE TABLE regress_kyc (id_number crm.cn_id_number PRIMARY KEY, card crm.bank_card, mobile crm.cn_mobile);
INSERT INTO regress_kyc VALUES ('11010519491231002X', '4111111111111111', '13812345678');
INSERT INTO regress_kyc VALUES ('110105194912310021', NULL, NULL);
COPY regress_kyc FROM stdin;
110101200002290018	6222021234567890128	19912345678
\.
COPY regress_kyc FROM stdin;
110101190002290017	\N	\N
\.
SELECT * FROM regress_kyc ORDER BY 1;
DROP TABLE regress_kyc;
