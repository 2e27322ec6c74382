"""Small clinical catalogs for the synthetic population: CIE-10 diagnoses, LOINC laboratory tests,
RxNorm medications, health institutions and insurers.

Codes are real: CIE-10 (the WHO ICD-10 that Mexico uses, descriptions in Spanish), LOINC codes with
their long common names, UCUM units, RxNorm ingredient concepts (RxCUI, ``TTY=IN``/``MIN``) with the
Spanish product text a Mexican prescription would carry, SNOMED CT route codes. Reference ranges are the
usual adult ones and only need to be plausible. Prevalences and weights are rough, chosen to give a
population that looks like a Mexican outpatient practice (a lot of type-2 diabetes and hypertension).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CIE10_SYSTEM = "urn:oid:2.16.840.1.113883.6.3"
LOINC_SYSTEM = "http://loinc.org"
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM_SYSTEM = "http://unitsofmeasure.org"
SNOMED_SYSTEM = "http://snomed.info/sct"


# --------------------------------------------------------------------------------------------------
# Medications
# --------------------------------------------------------------------------------------------------

# SNOMED CT route of administration: code -> (display, Spanish text)
ROUTES: dict[str, tuple[str, str, str]] = {
    "oral": ("26643006", "Oral route", "Vía oral"),
    "inhalada": ("447694001", "Respiratory tract route", "Vía inhalatoria"),
    "subcutanea": ("34206005", "Subcutaneous route", "Vía subcutánea"),
    "intravenosa": ("47625008", "Intravenous route", "Vía intravenosa"),
    "intramuscular": ("78421000", "Intramuscular route", "Vía intramuscular"),
    "topica": ("6064005", "Topical route", "Vía tópica"),
    "oftalmica": ("54485002", "Ophthalmic route", "Vía oftálmica"),
}


@dataclass(frozen=True, slots=True)
class Medication:
    key: str
    rxnorm: str  # RxCUI of the ingredient
    rxnorm_name: str  # RxNorm name (English)
    text: str  # what the prescription says, in Spanish
    dosage: str  # dosage instruction, in Spanish
    frequency: int  # timing.repeat: `frequency` times every `period` `period_unit`
    period: float
    period_unit: str  # UCUM-ish units of time of FHIR: h, d, wk
    route: str  # key of ROUTES
    days: int  # usual duration of one prescription, days
    pediatric: tuple[str, str] | None = None  # (text, dosage) for children under 12; None: adults only


MEDICATIONS: dict[str, Medication] = {
    m.key: m
    for m in (
        Medication("metformina", "6809", "metformin", "Metformina tableta 850 mg", "Tomar 1 tableta cada 12 horas con los alimentos", 2, 1, "d", "oral", 30),
        Medication("glibenclamida", "4815", "glyburide", "Glibenclamida tableta 5 mg", "Tomar 1 tableta cada 24 horas antes del desayuno", 1, 1, "d", "oral", 30),
        Medication("insulina_glargina", "274783", "insulin glargine", "Insulina glargina solución inyectable 100 UI/mL", "Aplicar 20 UI por vía subcutánea cada 24 horas por la noche", 1, 1, "d", "subcutanea", 30),
        Medication("dapagliflozina", "1488564", "dapagliflozin", "Dapagliflozina tableta 10 mg", "Tomar 1 tableta cada 24 horas por la mañana", 1, 1, "d", "oral", 30),
        Medication("losartan", "52175", "losartan", "Losartán tableta 50 mg", "Tomar 1 tableta cada 12 horas", 2, 1, "d", "oral", 30),
        Medication("enalapril", "3827", "enalapril", "Enalapril tableta 10 mg", "Tomar 1 tableta cada 12 horas", 2, 1, "d", "oral", 30),
        Medication("amlodipino", "17767", "amlodipine", "Amlodipino tableta 5 mg", "Tomar 1 tableta cada 24 horas", 1, 1, "d", "oral", 30),
        Medication("hidroclorotiazida", "5487", "hydrochlorothiazide", "Hidroclorotiazida tableta 25 mg", "Tomar 1 tableta cada 24 horas por la mañana", 1, 1, "d", "oral", 30),
        Medication("metoprolol", "6918", "metoprolol", "Metoprolol tableta 100 mg", "Tomar 1/2 tableta cada 12 horas", 2, 1, "d", "oral", 30),
        Medication("atorvastatina", "83367", "atorvastatin", "Atorvastatina tableta 20 mg", "Tomar 1 tableta cada 24 horas por la noche", 1, 1, "d", "oral", 30),
        Medication("pravastatina", "42463", "pravastatin", "Pravastatina tableta 10 mg", "Tomar 1 tableta cada 24 horas por la noche", 1, 1, "d", "oral", 30),
        Medication("simvastatina", "36567", "simvastatin", "Simvastatina tableta 20 mg", "Tomar 1 tableta cada 24 horas por la noche", 1, 1, "d", "oral", 30),
        Medication("aspirina", "1191", "aspirin", "Ácido acetilsalicílico tableta 100 mg", "Tomar 1 tableta cada 24 horas después de la comida", 1, 1, "d", "oral", 30),
        Medication("clopidogrel", "32968", "clopidogrel", "Clopidogrel tableta 75 mg", "Tomar 1 tableta cada 24 horas", 1, 1, "d", "oral", 30),
        Medication("levotiroxina", "10582", "levothyroxine", "Levotiroxina sódica tableta 100 µg", "Tomar 1 tableta cada 24 horas en ayunas", 1, 1, "d", "oral", 30),
        Medication("alendronato", "46041", "alendronate", "Alendronato sódico tableta 70 mg", "Tomar 1 tableta cada semana en ayunas con un vaso de agua, sin recostarse en 30 minutos", 1, 1, "wk", "oral", 28),
        Medication("calcio", "1897", "calcium carbonate", "Carbonato de calcio tableta 600 mg", "Tomar 1 tableta cada 12 horas con los alimentos", 2, 1, "d", "oral", 30),
        Medication("colecalciferol", "2418", "cholecalciferol", "Colecalciferol cápsula 1000 UI", "Tomar 1 cápsula cada 24 horas", 1, 1, "d", "oral", 30),
        Medication("salbutamol", "435", "albuterol", "Salbutamol suspensión en aerosol 100 µg/dosis", "Inhalar 2 disparos cada 6 horas en caso de dificultad respiratoria", 4, 1, "d", "inhalada", 30,
                   ("Salbutamol suspensión en aerosol 100 µg/dosis con aerocámara", "Inhalar 2 disparos con aerocámara cada 6 horas en caso de dificultad respiratoria")),
        Medication("beclometasona", "1347", "beclomethasone", "Beclometasona suspensión en aerosol 250 µg/dosis", "Inhalar 2 disparos cada 12 horas y enjuagar la boca", 2, 1, "d", "inhalada", 30,
                   ("Beclometasona suspensión en aerosol 50 µg/dosis con aerocámara", "Inhalar 2 disparos con aerocámara cada 12 horas")),
        Medication("tiotropio", "69120", "tiotropium", "Tiotropio polvo para inhalación 18 µg", "Inhalar el contenido de 1 cápsula cada 24 horas", 1, 1, "d", "inhalada", 30),
        Medication("sertralina", "36437", "sertraline", "Sertralina tableta 50 mg", "Tomar 1 tableta cada 24 horas por la mañana", 1, 1, "d", "oral", 30),
        Medication("fluoxetina", "4493", "fluoxetine", "Fluoxetina cápsula 20 mg", "Tomar 1 cápsula cada 24 horas por la mañana", 1, 1, "d", "oral", 30),
        Medication("clonazepam", "2598", "clonazepam", "Clonazepam tableta 2 mg", "Tomar 1/4 de tableta cada 24 horas por la noche", 1, 1, "d", "oral", 30),
        Medication("furosemida", "4603", "furosemide", "Furosemida tableta 40 mg", "Tomar 1 tableta cada 24 horas por la mañana", 1, 1, "d", "oral", 30),
        Medication("omeprazol", "7646", "omeprazole", "Omeprazol cápsula 20 mg", "Tomar 1 cápsula cada 24 horas en ayunas", 1, 1, "d", "oral", 30),
        Medication("paracetamol", "161", "acetaminophen", "Paracetamol tableta 500 mg", "Tomar 1 tableta cada 8 horas en caso de dolor o fiebre", 3, 1, "d", "oral", 5,
                   ("Paracetamol solución oral 100 mg/mL", "Administrar 15 mg/kg por vía oral cada 6 horas en caso de fiebre")),
        Medication("ibuprofeno", "5640", "ibuprofen", "Ibuprofeno tableta 400 mg", "Tomar 1 tableta cada 8 horas con alimentos", 3, 1, "d", "oral", 5,
                   ("Ibuprofeno suspensión oral 100 mg/5 mL", "Administrar 10 mg/kg por vía oral cada 8 horas con alimentos")),
        Medication("naproxeno", "7258", "naproxen", "Naproxeno tableta 250 mg", "Tomar 1 tableta cada 12 horas con alimentos", 2, 1, "d", "oral", 7),
        Medication("diclofenaco", "3355", "diclofenac", "Diclofenaco tableta 100 mg", "Tomar 1 tableta cada 24 horas con alimentos", 1, 1, "d", "oral", 5),
        Medication("ketorolaco", "35827", "ketorolac", "Ketorolaco tableta 10 mg", "Tomar 1 tableta cada 8 horas por 3 días", 3, 1, "d", "oral", 3),
        Medication("ketorolaco_iv", "35827", "ketorolac", "Ketorolaco solución inyectable 30 mg/mL", "Aplicar 30 mg por vía intravenosa cada 8 horas", 3, 1, "d", "intravenosa", 2),
        Medication("amoxicilina", "723", "amoxicillin", "Amoxicilina cápsula 500 mg", "Tomar 1 cápsula cada 8 horas por 7 días", 3, 1, "d", "oral", 7,
                   ("Amoxicilina suspensión oral 250 mg/5 mL", "Administrar 15 mg/kg por vía oral cada 8 horas por 7 días")),
        Medication("amoxicilina_clavulanato", "19711", "amoxicillin / clavulanate", "Amoxicilina/ácido clavulánico tableta 875/125 mg", "Tomar 1 tableta cada 12 horas por 7 días", 2, 1, "d", "oral", 7,
                   ("Amoxicilina/ácido clavulánico suspensión 400/57 mg/5 mL", "Administrar 45 mg/kg/día por vía oral dividido cada 12 horas por 7 días")),
        Medication("azitromicina", "18631", "azithromycin", "Azitromicina tableta 500 mg", "Tomar 1 tableta cada 24 horas por 3 días", 1, 1, "d", "oral", 3,
                   ("Azitromicina suspensión oral 200 mg/5 mL", "Administrar 10 mg/kg por vía oral cada 24 horas por 3 días")),
        Medication("ciprofloxacino", "2551", "ciprofloxacin", "Ciprofloxacino tableta 500 mg", "Tomar 1 tableta cada 12 horas por 7 días", 2, 1, "d", "oral", 7),
        Medication("nitrofurantoina", "7454", "nitrofurantoin", "Nitrofurantoína cápsula 100 mg", "Tomar 1 cápsula cada 6 horas por 7 días", 4, 1, "d", "oral", 7),
        Medication("fenazopiridina", "8120", "phenazopyridine", "Fenazopiridina tableta 100 mg", "Tomar 1 tableta cada 8 horas por 2 días", 3, 1, "d", "oral", 2),
        Medication("metronidazol", "6922", "metronidazole", "Metronidazol tableta 500 mg", "Tomar 1 tableta cada 8 horas por 7 días", 3, 1, "d", "oral", 7,
                   ("Metronidazol suspensión oral 250 mg/5 mL", "Administrar 10 mg/kg por vía oral cada 8 horas por 7 días")),
        Medication("loperamida", "6468", "loperamide", "Loperamida tableta 2 mg", "Tomar 2 tabletas después de la primera evacuación diarreica y 1 después de cada evacuación, máximo 8 al día", 4, 1, "d", "oral", 2),
        Medication("loratadina", "28889", "loratadine", "Loratadina tableta 10 mg", "Tomar 1 tableta cada 24 horas por 5 días", 1, 1, "d", "oral", 5,
                   ("Loratadina jarabe 5 mg/5 mL", "Administrar 5 mL por vía oral cada 24 horas por 5 días")),
        Medication("cetirizina", "20610", "cetirizine", "Cetirizina tableta 10 mg", "Tomar 1 tableta cada 24 horas por 7 días", 1, 1, "d", "oral", 7,
                   ("Cetirizina solución oral 1 mg/mL", "Administrar 5 mL por vía oral cada 24 horas por 7 días")),
        Medication("dextrometorfano", "3289", "dextromethorphan", "Dextrometorfano jarabe 15 mg/5 mL", "Tomar 10 mL cada 8 horas en caso de tos", 3, 1, "d", "oral", 5),
        Medication("hidrocortisona_crema", "5492", "hydrocortisone", "Hidrocortisona crema 1 %", "Aplicar una capa delgada en la zona afectada cada 12 horas por 7 días", 2, 1, "d", "topica", 7,
                   ("Hidrocortisona crema 1 %", "Aplicar una capa delgada en la zona afectada cada 12 horas por 5 días")),
        Medication("tobramicina_oftalmica", "10627", "tobramycin", "Tobramicina solución oftálmica 0.3 %", "Aplicar 1 gota en el ojo afectado cada 4 horas por 7 días", 6, 1, "d", "oftalmica", 7,
                   ("Tobramicina solución oftálmica 0.3 %", "Aplicar 1 gota en el ojo afectado cada 4 horas por 7 días")),
        Medication("psyllium", "8928", "psyllium", "Psyllium plántago polvo 3.4 g", "Disolver 1 sobre en un vaso de agua cada 24 horas", 1, 1, "d", "oral", 15),
        Medication("prednisona", "8640", "prednisone", "Prednisona tableta 50 mg", "Tomar 1 tableta cada 24 horas por 5 días", 1, 1, "d", "oral", 5),
        Medication("ceftriaxona", "2193", "ceftriaxone", "Ceftriaxona solución inyectable 1 g", "Aplicar 1 g por vía intravenosa cada 12 horas", 2, 1, "d", "intravenosa", 7),
        Medication("enoxaparina", "67108", "enoxaparin", "Enoxaparina solución inyectable 40 mg/0.4 mL", "Aplicar 40 mg por vía subcutánea cada 24 horas", 1, 1, "d", "subcutanea", 5),
        Medication("omeprazol_iv", "7646", "omeprazole", "Omeprazol solución inyectable 40 mg", "Aplicar 40 mg por vía intravenosa cada 24 horas", 1, 1, "d", "intravenosa", 3),
        Medication("acido_folico", "4511", "folic acid", "Ácido fólico tableta 5 mg", "Tomar 1 tableta cada 24 horas", 1, 1, "d", "oral", 30),
    )
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Laboratory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabTest:
    loinc: str
    display: str  # LOINC long common name
    text: str  # Spanish
    unit: str  # UCUM code, also used as the human unit
    decimals: int
    mean: float  # of a healthy adult
    sd: float
    low: float | None  # reference range (adult; male when sex-specific)
    high: float | None
    low_female: float | None = None  # when the female range differs
    high_female: float | None = None
    minimum: float = 0.0  # values are clipped here


LAB_TESTS: dict[str, LabTest] = {
    t.loinc: t
    for t in (
        LabTest("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "Glucosa en suero", "mg/dL", 0, 90, 10, 70, 99, minimum=40),
        LabTest("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "Hemoglobina glucosilada (HbA1c)", "%", 1, 5.2, 0.3, 4.0, 5.6, minimum=3.5),
        LabTest("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Creatinina en suero", "mg/dL", 2, 0.9, 0.15, 0.7, 1.3, 0.6, 1.1, minimum=0.3),
        LabTest("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "Nitrógeno ureico en suero (BUN)", "mg/dL", 0, 14, 4, 7, 20, minimum=3),
        LabTest("3084-1", "Urate [Mass/volume] in Serum or Plasma", "Ácido úrico en suero", "mg/dL", 1, 5.2, 1.1, 3.5, 7.2, 2.6, 6.0, minimum=1.5),
        LabTest("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "Colesterol total", "mg/dL", 0, 185, 30, None, 200, minimum=90),
        LabTest("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "Triglicéridos", "mg/dL", 0, 140, 45, None, 150, minimum=40),
        LabTest("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "Colesterol HDL", "mg/dL", 0, 48, 10, 40, None, 50, None, minimum=20),
        LabTest("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation", "Colesterol LDL (calculado)", "mg/dL", 0, 110, 28, None, 130, minimum=30),
        LabTest("718-7", "Hemoglobin [Mass/volume] in Blood", "Hemoglobina", "g/dL", 1, 14.5, 1.2, 13.5, 17.5, 12.0, 15.5, minimum=5),
        LabTest("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "Hematocrito", "%", 1, 43, 3.5, 41, 53, 36, 46, minimum=15),
        LabTest("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "Leucocitos", "10*3/uL", 1, 7.2, 1.8, 4.5, 11.0, minimum=1.5),
        LabTest("777-3", "Platelets [#/volume] in Blood by Automated count", "Plaquetas", "10*3/uL", 0, 260, 60, 150, 450, minimum=40),
        LabTest("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "Alanina aminotransferasa (ALT)", "U/L", 0, 25, 9, 7, 56, minimum=4),
        LabTest("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "Aspartato aminotransferasa (AST)", "U/L", 0, 24, 7, 10, 40, minimum=5),
        LabTest("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "Sodio en suero", "mmol/L", 0, 140, 2.5, 135, 145, minimum=115),
        LabTest("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "Potasio en suero", "mmol/L", 1, 4.2, 0.35, 3.5, 5.1, minimum=2.5),
        LabTest("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "Hormona estimulante de tiroides (TSH)", "m[IU]/L", 2, 2.0, 0.8, 0.4, 4.0, minimum=0.01),
        LabTest("14959-1", "Microalbumin/Creatinine [Mass Ratio] in Urine", "Relación albúmina/creatinina en orina", "mg/g", 0, 12, 6, None, 30, minimum=2),
    )
}  # fmt: skip

# Panels as a Mexican lab names them: key -> (Spanish name, LOINC codes)
LAB_PANELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "quimica": ("Química sanguínea", ("2345-7", "3094-0", "2160-0", "3084-1")),
    "lipidos": ("Perfil de lípidos", ("2093-3", "2571-8", "2085-9", "13457-7")),
    "biometria": ("Biometría hemática", ("718-7", "4544-3", "6690-2", "777-3")),
    "hba1c": ("Hemoglobina glucosilada", ("4548-4",)),
    "hepatico": ("Pruebas de función hepática", ("1742-6", "1920-8")),
    "electrolitos": ("Electrolitos séricos", ("2951-2", "2823-3")),
    "tiroides": ("Perfil tiroideo", ("3016-3",)),
    "microalbumina": ("Microalbuminuria", ("14959-1",)),
    "glucosa": ("Glucosa en ayuno", ("2345-7",)),
}


# --------------------------------------------------------------------------------------------------
# Diagnoses (CIE-10)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChronicCondition:
    code: str
    display: str  # Spanish (CIE-10)
    prevalence: tuple[tuple[int, float], ...]  # (from age, probability of having it) steps
    sex: str | None  # "male" / "female" when only one sex has it
    regimens: tuple[tuple[tuple[str, ...], int], ...]  # alternative medication lists, weighted
    panels: tuple[str, ...]  # lab panels ordered in its control visits
    lab_shift: dict[str, tuple[float, float]] = field(default_factory=dict)  # LOINC -> (mean, sd) when present
    visits_per_year: float = 4.0  # control visits it asks for
    adjuncts: tuple[tuple[str, float], ...] = ()  # medications added to the regimen with this probability


CHRONIC_CONDITIONS: tuple[ChronicCondition, ...] = (
    ChronicCondition(
        "E11.9", "Diabetes mellitus tipo 2 sin complicaciones",
        ((20, 0.03), (40, 0.14), (60, 0.25)), None,
        ((("metformina",), 40), (("metformina", "glibenclamida"), 35), (("metformina", "insulina_glargina"), 15),
         (("metformina", "dapagliflozina"), 10)),
        ("quimica", "hba1c", "lipidos", "microalbumina"),
        {"2345-7": (165, 45), "4548-4": (8.1, 1.5), "2571-8": (210, 70)}, 8.0,
        (("aspirina", 0.4), ("atorvastatina", 0.45), ("omeprazol", 0.25)),
    ),
    ChronicCondition(
        "I10", "Hipertensión esencial (primaria)",
        ((20, 0.05), (40, 0.20), (60, 0.40)), None,
        ((("losartan",), 45), (("enalapril",), 25), (("amlodipino",), 15), (("losartan", "hidroclorotiazida"), 15)),
        ("quimica", "electrolitos", "lipidos"),
        {}, 6.0,
        (("hidroclorotiazida", 0.25), ("aspirina", 0.3), ("amlodipino", 0.15)),
    ),
    ChronicCondition(
        "E78.5", "Hiperlipidemia no especificada",
        ((20, 0.04), (40, 0.12), (60, 0.18)), None,
        ((("atorvastatina",), 65), (("simvastatina",), 20), (("pravastatina",), 15)),
        ("lipidos", "hepatico"),
        {"2093-3": (245, 35), "2571-8": (230, 80), "13457-7": (160, 30), "2085-9": (38, 7)}, 3.0,
        (("omeprazol", 0.15),),
    ),
    ChronicCondition(
        "E66.9", "Obesidad, no especificada",
        ((10, 0.03), (20, 0.08)), None,
        (((), 100),),
        ("quimica", "lipidos"),
        {"2571-8": (185, 60)}, 2.0,
        (("metformina", 0.2),),
    ),
    ChronicCondition(
        "M81.0", "Osteoporosis postmenopáusica",
        ((50, 0.08), (65, 0.16)), "female",
        ((("alendronato", "calcio", "colecalciferol"), 70), (("calcio", "colecalciferol"), 30)),
        ("quimica",),
        {}, 2.0,
    ),
    ChronicCondition(
        "E03.9", "Hipotiroidismo, no especificado",
        ((20, 0.015), (40, 0.03)), None,
        ((("levotiroxina",), 100),),
        ("tiroides",),
        {"3016-3": (5.5, 2.5)}, 2.0,
    ),
    ChronicCondition(
        "J45.9", "Asma, no especificada",
        ((3, 0.04),), None,
        ((("salbutamol",), 55), (("salbutamol", "beclometasona"), 45)),
        ("biometria",),
        {}, 2.0,
    ),
    ChronicCondition(
        "F32.9", "Episodio depresivo, no especificado",
        ((15, 0.03),), None,
        ((("sertralina",), 60), (("fluoxetina",), 40)),
        (),
        {}, 3.0,
        (("clonazepam", 0.3),),
    ),
    ChronicCondition(
        "N18.9", "Enfermedad renal crónica, no especificada",
        ((40, 0.015), (65, 0.04)), None,
        ((("furosemida",), 60), (("furosemida", "acido_folico"), 40)),
        ("quimica", "electrolitos", "biometria", "microalbumina"),
        {"2160-0": (2.3, 0.8), "3094-0": (38, 12), "718-7": (11.2, 1.3), "2823-3": (5.0, 0.5), "14959-1": (180, 90)}, 6.0,
        (("calcio", 0.5), ("losartan", 0.4)),
    ),
    ChronicCondition(
        "M17.9", "Gonartrosis, no especificada",
        ((50, 0.06), (65, 0.12)), None,
        ((("paracetamol",), 60), (("naproxeno",), 40)),
        (),
        {}, 2.0,
        (("omeprazol", 0.4), ("diclofenaco", 0.2)),
    ),
    ChronicCondition(
        "K21.9", "Enfermedad del reflujo gastroesofágico sin esofagitis",
        ((20, 0.03),), None,
        ((("omeprazol",), 100),),
        (),
        {}, 1.5,
    ),
    ChronicCondition(
        "J44.9", "Enfermedad pulmonar obstructiva crónica, no especificada",
        ((50, 0.02), (65, 0.05)), None,
        ((("tiotropio", "salbutamol"), 100),),
        ("biometria",),
        {"718-7": (16.4, 1.3)}, 4.0,
    ),
    ChronicCondition(
        "I25.9", "Enfermedad isquémica crónica del corazón, no especificada",
        ((45, 0.015), (65, 0.05)), None,
        ((("aspirina", "metoprolol", "atorvastatina"), 70), (("clopidogrel", "metoprolol", "atorvastatina"), 30)),
        ("quimica", "lipidos", "electrolitos"),
        {}, 4.0,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AcuteDiagnosis:
    code: str
    display: str  # Spanish (CIE-10)
    weights: tuple[float, float, float]  # relative frequency in children (<15), adults (15-59), older adults (60+)
    sex: str | None
    medications: tuple[tuple[tuple[str, ...], int], ...]  # alternative medication lists, weighted
    panels: tuple[str, ...]  # lab panels sometimes ordered
    lab_probability: float
    incapacity_days: tuple[int, int]  # days of a certificado de incapacidad, when one is issued
    lab_shift: dict[str, tuple[float, float]] = field(default_factory=dict)
    not_before: str | None = None  # ISO date before which the diagnosis did not exist (COVID-19)


ACUTE_DIAGNOSES: tuple[AcuteDiagnosis, ...] = (
    AcuteDiagnosis("J00", "Rinofaringitis aguda [resfriado común]", (30, 14, 8), None,
                   ((("paracetamol", "loratadina"), 60), (("paracetamol",), 40)), (), 0.0, (1, 3)),
    AcuteDiagnosis("J02.9", "Faringitis aguda, no especificada", (18, 10, 5), None,
                   ((("amoxicilina", "paracetamol"), 60), (("azitromicina", "ibuprofeno"), 40)), ("biometria",), 0.1, (2, 3)),
    AcuteDiagnosis("J06.9", "Infección aguda de las vías respiratorias superiores, no especificada", (22, 12, 8), None,
                   ((("paracetamol", "dextrometorfano"), 50), (("paracetamol", "cetirizina"), 50)), (), 0.0, (1, 3)),
    AcuteDiagnosis("J20.9", "Bronquitis aguda, no especificada", (8, 5, 7), None,
                   ((("amoxicilina_clavulanato", "paracetamol"), 60), (("azitromicina", "salbutamol"), 40)), ("biometria",), 0.3, (3, 5),
                   {"6690-2": (11.5, 3.0)}),
    AcuteDiagnosis("A09", "Diarrea y gastroenteritis de presunto origen infeccioso", (16, 9, 6), None,
                   ((("metronidazol", "paracetamol"), 40), (("loperamida",), 30), (("paracetamol",), 30)), ("biometria", "electrolitos"), 0.15, (2, 4)),
    AcuteDiagnosis("K29.7", "Gastritis, no especificada", (1, 9, 6), None,
                   ((("omeprazol",), 100),), (), 0.0, (1, 2)),
    AcuteDiagnosis("N39.0", "Infección de vías urinarias, sitio no especificado", (3, 8, 9), "female",
                   ((("nitrofurantoina", "fenazopiridina"), 50), (("ciprofloxacino",), 50)), ("biometria",), 0.25, (2, 3)),
    AcuteDiagnosis("M54.5", "Lumbago no especificado", (0, 10, 6), None,
                   ((("diclofenaco", "paracetamol"), 50), (("naproxeno",), 30), (("ketorolaco",), 20)), (), 0.0, (3, 7)),
    AcuteDiagnosis("B34.9", "Infección viral, no especificada", (12, 5, 3), None,
                   ((("paracetamol",), 100),), ("biometria",), 0.2, (2, 3)),
    AcuteDiagnosis("L30.9", "Dermatitis, no especificada", (6, 4, 3), None,
                   ((("hidrocortisona_crema", "loratadina"), 100),), (), 0.0, (1, 2)),
    AcuteDiagnosis("H10.9", "Conjuntivitis, no especificada", (6, 3, 2), None,
                   ((("tobramicina_oftalmica",), 100),), (), 0.0, (2, 3)),
    AcuteDiagnosis("S93.4", "Esguince y torcedura del tobillo", (3, 5, 1), None,
                   ((("naproxeno", "paracetamol"), 60), (("ketorolaco",), 40)), (), 0.0, (5, 14)),
    AcuteDiagnosis("R51", "Cefalea", (2, 5, 3), None,
                   ((("paracetamol",), 60), (("ibuprofeno",), 40)), (), 0.0, (1, 2)),
    AcuteDiagnosis("K59.0", "Constipación", (3, 3, 6), None,
                   ((("psyllium",), 100),), (), 0.0, (1, 1)),
    AcuteDiagnosis("U07.1", "COVID-19, virus identificado", (3, 8, 8), None,
                   ((("paracetamol",), 100),), ("biometria",), 0.3, (7, 14), {"6690-2": (5.0, 1.5)}, "2020-03-01"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HospitalReason:
    code: str
    display: str  # Spanish (CIE-10)
    weights: tuple[float, float, float]  # children, adults, older adults
    sex: str | None
    min_age: int
    max_age: int
    medications: tuple[str, ...]
    panels: tuple[str, ...]
    stay_days: tuple[int, int]  # hospital stay (inpatient) or 0,0 for emergency visits
    incapacity_days: tuple[int, int]
    incapacity_branch: str = "Enfermedad general"
    lab_shift: dict[str, tuple[float, float]] = field(default_factory=dict)


EMERGENCY_REASONS: tuple[HospitalReason, ...] = (
    HospitalReason("R10.4", "Otros dolores abdominales y los no especificados", (8, 10, 8), None, 0, 120,
                   ("ketorolaco_iv", "omeprazol_iv"), ("biometria", "quimica"), (0, 0), (1, 3)),
    HospitalReason("N20.0", "Cálculo del riñón", (0, 6, 4), None, 15, 120,
                   ("ketorolaco_iv", "ketorolaco"), ("biometria", "quimica"), (0, 0), (2, 5)),
    HospitalReason("S52.5", "Fractura de la epífisis inferior del radio", (5, 4, 6), None, 3, 120,
                   ("ketorolaco", "paracetamol"), (), (0, 0), (21, 42), "Riesgo de trabajo"),
    HospitalReason("J45.9", "Asma, no especificada", (7, 3, 2), None, 3, 120,
                   ("salbutamol", "prednisona"), ("biometria",), (0, 0), (2, 4)),
    HospitalReason("A09", "Diarrea y gastroenteritis de presunto origen infeccioso", (10, 5, 6), None, 0, 120,
                   ("metronidazol", "paracetamol"), ("biometria", "electrolitos"), (0, 0), (2, 4),
                   lab_shift={"2823-3": (3.3, 0.3), "2951-2": (133, 3)}),
    HospitalReason("T78.4", "Alergia no especificada", (5, 4, 2), None, 0, 120,
                   ("cetirizina", "prednisona"), (), (0, 0), (1, 2)),
    HospitalReason("S06.0", "Concusión", (4, 3, 3), None, 0, 120,
                   ("paracetamol",), (), (0, 0), (3, 7), "Riesgo de trabajo"),
)  # fmt: skip

ADMISSION_REASONS: tuple[HospitalReason, ...] = (
    HospitalReason("K35.8", "Apendicitis aguda, otra y la no especificada", (8, 8, 3), None, 5, 120,
                   ("ceftriaxona", "ketorolaco_iv", "omeprazol_iv"), ("biometria", "quimica", "electrolitos"), (2, 4), (14, 21),
                   lab_shift={"6690-2": (15.5, 3.0)}),
    HospitalReason("K80.2", "Cálculo de la vesícula biliar sin colecistitis", (0, 8, 6), None, 15, 120,
                   ("ketorolaco_iv", "omeprazol_iv", "enoxaparina"), ("biometria", "quimica", "hepatico"), (1, 3), (14, 21)),
    HospitalReason("J18.9", "Neumonía, no especificada", (6, 3, 10), None, 0, 120,
                   ("ceftriaxona", "paracetamol", "enoxaparina"), ("biometria", "quimica", "electrolitos"), (3, 8), (7, 14),
                   lab_shift={"6690-2": (14.5, 3.5)}),
    HospitalReason("I21.9", "Infarto agudo del miocardio, sin otra especificación", (0, 2, 6), None, 35, 120,
                   ("aspirina", "clopidogrel", "enoxaparina", "atorvastatina", "metoprolol"), ("biometria", "quimica", "electrolitos", "lipidos"),
                   (4, 10), (28, 60)),
    HospitalReason("O80.0", "Parto único espontáneo, presentación cefálica de vértice", (0, 12, 0), "female", 16, 44,
                   ("paracetamol", "ketorolaco_iv"), ("biometria",), (1, 2), (84, 84), "Maternidad"),
    HospitalReason("E11.6", "Diabetes mellitus no insulinodependiente, con otras complicaciones especificadas", (0, 2, 5), None, 30, 120,
                   ("insulina_glargina", "enoxaparina", "ceftriaxona"), ("biometria", "quimica", "electrolitos", "hba1c"), (3, 9), (14, 28),
                   lab_shift={"2345-7": (290, 80), "4548-4": (10.2, 1.8)}),
)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Institutions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Institution:
    key: str  # "IMSS"
    name: str
    clues: str  # the three letters of the institution in a CLUES key
    weight: float  # share of the population affiliated
    primary: str  # name pattern of a first-level unit; {n} number, {city}
    hospital: str  # name pattern of a hospital
    coverage_text: str
    units_per_million: float  # first-level units in the synthetic pool, per million inhabitants of the entidad
    hospitals_per_million: float


INSTITUTIONS: tuple[Institution, ...] = (
    Institution("IMSS", "Instituto Mexicano del Seguro Social", "IMS", 0.50,
                "Unidad de Medicina Familiar No. {n}", "Hospital General de Zona No. {n}",
                "Seguro social (IMSS), régimen obligatorio", 1.6, 0.5),
    Institution("ISSSTE", "Instituto de Seguridad y Servicios Sociales de los Trabajadores del Estado", "IST", 0.08,
                "Clínica de Medicina Familiar {city} {n}", "Hospital General ISSSTE {city}",
                "Seguridad social de los trabajadores del Estado (ISSSTE)", 0.5, 0.2),
    Institution("IMSS-BIENESTAR", "Servicios de Salud del Instituto Mexicano del Seguro Social para el Bienestar (IMSS-Bienestar)", "IMB", 0.35,
                "Centro de Salud {city} No. {n}", "Hospital General IMSS-Bienestar {city} No. {n}",
                "Atención a la salud para personas sin seguridad social (IMSS-Bienestar)", 1.4, 0.4),
    Institution("PRIVADO", "Servicios médicos privados", "SMP", 0.07,
                "Consultorio Médico {surname} No. {n}", "{chain} {city}",
                "Seguro de gastos médicos mayores", 0.8, 0.3),
)  # fmt: skip

PRIVATE_HOSPITAL_CHAINS: tuple[str, ...] = (
    "Hospital Ángeles", "Hospital Star Médica", "Christus Muguerza", "Hospital San José", "Médica Sur",
    "Hospital Español", "Hospital MAC", "Sanatorio Guadalupano", "Hospital Santa Fe", "Clínica del Carmen",
)

PRIVATE_INSURERS: tuple[tuple[str, str], ...] = (
    ("GNP", "Grupo Nacional Provincial, S.A.B. (GNP Seguros)"),
    ("AXA", "AXA Seguros, S.A. de C.V."),
    ("METLIFE", "MetLife México, S.A."),
    ("SMNYL", "Seguros Monterrey New York Life, S.A. de C.V."),
    ("BUPA", "BUPA México, Compañía de Seguros, S.A. de C.V."),
)

# Specialties of the physicians of a first-level unit and of a hospital, weighted.
PRIMARY_SPECIALTIES: tuple[tuple[str, int], ...] = (
    ("Medicina Familiar", 70), ("Medicina General", 25), ("Pediatría", 5),
)
HOSPITAL_SPECIALTIES: tuple[tuple[str, int], ...] = (
    ("Urgencias Médico-Quirúrgicas", 30), ("Medicina Interna", 25), ("Cirugía General", 20),
    ("Ginecología y Obstetricia", 10), ("Pediatría", 10), ("Cardiología", 5),
)  # fmt: skip

# Population pyramid (Censo 2020, rounded), five-year groups from 0-4 to 90-94 plus 95-99.
AGE_GROUP_WEIGHTS: tuple[float, ...] = (
    8.0, 8.3, 8.5, 8.6, 8.3, 7.9, 7.5, 7.2, 7.0, 6.3, 5.6, 4.6, 3.8, 2.9, 2.2, 1.5, 0.9, 0.5, 0.2, 0.06,
)
