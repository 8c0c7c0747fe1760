/*
 * suitability.c: investor appropriateness, checked per row. A holding, or an opportunity marked
 * won, is refused when the product's risk level is above what the customer's risk tolerance allows
 * (crm.suitability_matrix), or when the customer's KYC or risk assessment is not current — unless
 * an approved crm_data.suitability_override covers that customer and product.
 */
#include "crm.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/rel.h"

static bool
col(HeapTuple t, TupleDesc d, const char *name, Datum *v)
{
	int			att = SPI_fnumber(d, name);
	bool		isnull = true;

	if (att <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" is missing for the suitability check", crm_short(name))));
	*v = heap_getattr(t, att, d, &isnull);
	return !isnull;
}

static bool
changed(HeapTuple o, HeapTuple n, TupleDesc d, const char *name)
{
	Datum		a, b;
	bool		ha = col(o, d, name, &a), hb = col(n, d, name, &b);

	return ha != hb || (ha && DatumGetInt64(a) != DatumGetInt64(b));
}

/*
 * Trigger crm._suitability_check(), BEFORE INSERT OR UPDATE FOR EACH ROW on holding and
 * opportunity (an opportunity is checked when it becomes won).
 */
PG_FUNCTION_INFO_V1(crm_suitability_check);
Datum
crm_suitability_check(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	newt, oldt = NULL;
	bool		is_opp;
	Datum		cust, prod, v;
	int64		customer, product;
	Datum		out[7];
	bool		outnull[7];
	Oid			types[2] = {INT8OID, INT8OID};
	Datum		vals[2];
	const char *problem = NULL;
	char	   *detail = NULL;
	DateADT		today = crm_today_date();

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("crm._suitability_check() must be a BEFORE INSERT OR UPDATE row trigger")));
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	newt = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		oldt = td->tg_trigtuple;
	is_opp = strcmp(RelationGetRelationName(rel), "opportunity") == 0;

	if (is_opp)
	{
		bool		won = col(newt, desc, "stage", &v) && strcmp(TextDatumGetCString(v), "won") == 0;
		bool		was_won = oldt && col(oldt, desc, "stage", &v) && strcmp(TextDatumGetCString(v), "won") == 0;

		if (!won || (was_won && !changed(oldt, newt, desc, "customer_id") && !changed(oldt, newt, desc, "product_id")))
			return PointerGetDatum(newt);
	}
	else if (oldt && !changed(oldt, newt, desc, "customer_id") && !changed(oldt, newt, desc, "product_id"))
		return PointerGetDatum(newt);
	if (!col(newt, desc, "customer_id", &cust) || !col(newt, desc, "product_id", &prod))
		return PointerGetDatum(newt);	/* no product (an opportunity without one): nothing to check */
	customer = DatumGetInt64(cust);
	product = DatumGetInt64(prod);
	vals[0] = cust;
	vals[1] = prod;

	/* tolerance, the most it allows, the product's level, KYC, assessment, its validity, an override */
	if (!crm_query_row_as_owner(
			"SELECT c.risk_tolerance, m.max_risk, p.risk_level, c.kyc_status, c.kyc_expires_on,"
			"       (c.risk_assessed_on OPERATOR(pg_catalog.+) coalesce((SELECT s.value FROM crm.setting s WHERE s.name OPERATOR(pg_catalog.=) 'risk_assessment_validity'), '1 year')::pg_catalog.interval)::pg_catalog.date,"
			"       EXISTS (SELECT 1 FROM crm_data.suitability_override o WHERE o.customer_id OPERATOR(pg_catalog.=) c.id"
			"               AND o.product_id OPERATOR(pg_catalog.=) p.id AND o.status OPERATOR(pg_catalog.=) 'approved'"
			"               AND (o.valid_until IS NULL OR o.valid_until OPERATOR(pg_catalog.>=) crm.today()))"
			"  FROM crm_data.customer c CROSS JOIN crm_data.product p"
			"  LEFT JOIN crm.suitability_matrix m ON m.tolerance OPERATOR(pg_catalog.=) c.risk_tolerance"
			" WHERE c.id OPERATOR(pg_catalog.=) $1 AND p.id OPERATOR(pg_catalog.=) $2",
			2, types, vals, out, outnull, 7))
		return PointerGetDatum(newt);	/* a missing customer or product: the foreign keys say so */
	if (!outnull[6] && DatumGetBool(out[6]))
		return PointerGetDatum(newt);	/* an approved override */
	if (outnull[0])
	{
		problem = "the customer has no risk tolerance";
		detail = psprintf("Product %lld is risk level %s.", (long long) product, outnull[2] ? "?" : TextDatumGetCString(out[2]));
	}
	else if (outnull[1])
	{
		problem = psprintf("risk tolerance %s is not in crm.suitability_matrix", TextDatumGetCString(out[0]));
		detail = NULL;
	}
	else if (!outnull[2] && strcmp(TextDatumGetCString(out[2]), TextDatumGetCString(out[1])) > 0)
	{
		problem = psprintf("product risk level %s exceeds what risk tolerance %s allows (up to %s)",
						   TextDatumGetCString(out[2]), TextDatumGetCString(out[0]), TextDatumGetCString(out[1]));
		detail = NULL;
	}
	else if (outnull[3] || strcmp(TextDatumGetCString(out[3]), "verified") != 0 ||
			 (!outnull[4] && DatumGetDateADT(out[4]) < today))
	{
		problem = "the customer's KYC is not current";
		detail = psprintf("KYC status %s%s%s.", outnull[3] ? "(none)" : TextDatumGetCString(out[3]),
						  outnull[4] ? "" : ", expires ", outnull[4] ? "" : DatumGetCString(DirectFunctionCall1(date_out, out[4])));
	}
	else if (outnull[5] || DatumGetDateADT(out[5]) < today)
	{
		problem = "the customer's risk assessment has expired";
		detail = outnull[5] ? pstrdup("No risk assessment date (risk_assessed_on).")
			: psprintf("It was valid until %s.", DatumGetCString(DirectFunctionCall1(date_out, out[5])));
	}
	if (problem == NULL)
		return PointerGetDatum(newt);
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("%s refused: %s", crm_short(is_opp ? "winning this opportunity" : "this holding"), problem),
			 detail ? errdetail("%s Customer %lld, product %lld.", detail, (long long) customer, (long long) product)
			 : errdetail("Customer %lld, product %lld.", (long long) customer, (long long) product),
			 errhint("Update the customer's assessment, or have compliance approve a suitability_override for this customer and product.")));
	return PointerGetDatum(NULL);
}
