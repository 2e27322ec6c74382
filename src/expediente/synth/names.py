"""Common Mexican given names and surnames, spelled with their accents, with rough relative frequencies.

The weights are relative (not percentages): they only make "García" and "Hernández" much more common than
"Ek" or "Zúñiga", as in RENAPO's registry. Compound given names ("José Luis", "María de los Ángeles") are
single entries, because they are chosen as a unit; ``given_parts`` splits them into FHIR ``given`` items.
Surnames include compound ones ("De la Cruz", "Montes de Oca") and short Maya ones ("Ek", "May", "Pech"),
which exercise the CURP rules.
"""

from __future__ import annotations

MALE_GIVEN: tuple[tuple[str, int], ...] = (
    ("José", 30), ("Juan", 25), ("José Luis", 22), ("Juan Carlos", 14), ("Luis", 14), ("Carlos", 14),
    ("Jesús", 13), ("Miguel Ángel", 13), ("Francisco", 12), ("Antonio", 11), ("Alejandro", 11),
    ("Jorge", 10), ("José Antonio", 10), ("Pedro", 9), ("Manuel", 9), ("Juan Manuel", 8), ("Ricardo", 8),
    ("Fernando", 8), ("Roberto", 8), ("Javier", 8), ("Eduardo", 7), ("Daniel", 7), ("Raúl", 7),
    ("Sergio", 7), ("Arturo", 7), ("Martín", 7), ("Óscar", 6), ("Ramón", 6), ("Andrés", 5), ("Rubén", 5),
    ("Héctor", 6), ("Víctor", 6), ("Rafael", 6), ("Ángel", 6), ("Iván", 5), ("Adrián", 5), ("Julián", 4),
    ("Sebastián", 6), ("Santiago", 7), ("Mateo", 5), ("Emiliano", 5), ("Diego", 6), ("Leonardo", 5),
    ("Gael", 3), ("Joaquín", 4), ("Tomás", 3), ("Agustín", 3), ("Efraín", 2), ("Germán", 2),
    ("Salvador", 4), ("Enrique", 5), ("Alfredo", 4), ("Gerardo", 5), ("Hugo", 4), ("Ernesto", 4),
    ("Guillermo", 4), ("Ignacio", 3), ("Mario", 5), ("Gabriel", 5), ("Armando", 4), ("Alberto", 5),
    ("Rodrigo", 4), ("Gustavo", 3), ("Israel", 3), ("Abraham", 2), ("Emmanuel", 3), ("José de Jesús", 5),
    ("José Guadalupe", 4), ("Luis Ángel", 4), ("Jesús Alberto", 2), ("Marco Antonio", 4), ("Cuauhtémoc", 1),
    ("Moisés", 2), ("Noé", 1), ("Isaías", 1), ("Benjamín", 2), ("Saúl", 2), ("Uriel", 2),
)  # fmt: skip

FEMALE_GIVEN: tuple[tuple[str, int], ...] = (
    ("María", 20), ("Guadalupe", 14), ("María Guadalupe", 18), ("Juana", 9), ("Margarita", 8),
    ("Verónica", 8), ("Leticia", 8), ("Rosa María", 8), ("Elizabeth", 7), ("Patricia", 9), ("Gabriela", 8),
    ("Alejandra", 8), ("Adriana", 7), ("Claudia", 7), ("Araceli", 5), ("Silvia", 6), ("Laura", 6),
    ("Mónica", 6), ("Teresa", 5), ("Yolanda", 5), ("Sofía", 7), ("Valentina", 6), ("Regina", 5),
    ("Ximena", 6), ("Camila", 6), ("Renata", 5), ("Fernanda", 5), ("María Fernanda", 7), ("Daniela", 6),
    ("Andrea", 6), ("Mariana", 6), ("Itzel", 4), ("Citlali", 3), ("Xóchitl", 2), ("Beatriz", 4),
    ("Lucía", 4), ("Inés", 2), ("Mercedes", 3), ("Raquel", 3), ("Noemí", 3), ("Rocío", 4), ("Dolores", 3),
    ("María del Carmen", 10), ("María de los Ángeles", 7), ("María de Lourdes", 6), ("María Elena", 7),
    ("María Isabel", 6), ("María José", 5), ("Ana María", 5), ("Josefina", 4), ("Concepción", 3),
    ("Esperanza", 4), ("Martha", 6), ("Irma", 4), ("Norma", 5), ("Alicia", 4), ("Susana", 4), ("Érika", 4),
    ("Karla", 5), ("Paola", 5), ("Natalia", 4), ("Jimena", 4), ("Valeria", 5), ("Brenda", 4), ("Dulce María", 3),
    ("Ángela", 3), ("Rebeca", 2), ("Nayeli", 2), ("Itzel Abigail", 1), ("Belén", 2), ("Zoé", 2),
)  # fmt: skip

SURNAMES: tuple[tuple[str, int], ...] = (
    ("Hernández", 100), ("García", 75), ("Martínez", 70), ("López", 67), ("González", 64), ("Pérez", 55),
    ("Rodríguez", 52), ("Sánchez", 50), ("Ramírez", 47), ("Cruz", 35), ("Flores", 33), ("Gómez", 32),
    ("Morales", 29), ("Vázquez", 28), ("Reyes", 28), ("Jiménez", 27), ("Torres", 27), ("Díaz", 26),
    ("Gutiérrez", 25), ("Ruiz", 24), ("Mendoza", 24), ("Aguilar", 24), ("Ortiz", 22), ("Moreno", 21),
    ("Castillo", 21), ("Romero", 20), ("Álvarez", 20), ("Méndez", 19), ("Chávez", 19), ("Rivera", 18),
    ("Juárez", 18), ("Ramos", 17), ("Domínguez", 17), ("Herrera", 17), ("Medina", 16), ("Castro", 15),
    ("Vargas", 15), ("Guzmán", 14), ("Velázquez", 14), ("Muñoz", 13), ("Rojas", 13), ("Contreras", 13),
    ("Salazar", 12), ("Luna", 12), ("Ortega", 12), ("Santiago", 12), ("Guerrero", 12), ("Estrada", 11),
    ("Bautista", 11), ("Cortés", 11), ("Soto", 10), ("Alvarado", 10), ("Espinoza", 10), ("Lara", 10),
    ("Ávila", 10), ("Ríos", 9), ("Cervantes", 9), ("Silva", 9), ("Delgado", 9), ("Vega", 9), ("Márquez", 9),
    ("Sandoval", 9), ("Fernández", 8), ("León", 8), ("Carrillo", 8), ("Mejía", 8), ("Solís", 8),
    ("Núñez", 8), ("Rosas", 7), ("Valdez", 7), ("Ibarra", 7), ("Campos", 7), ("Santos", 7), ("Camacho", 7),
    ("Navarro", 7), ("Peña", 7), ("Maldonado", 7), ("Rosales", 6), ("Acosta", 6), ("Miranda", 6),
    ("Trejo", 6), ("Valencia", 6), ("Nava", 6), ("Pacheco", 6), ("Huerta", 5), ("Padilla", 5),
    ("Ibáñez", 3), ("Cárdenas", 5), ("Quintero", 4), ("Zúñiga", 4), ("Ochoa", 5), ("Benítez", 5),
    ("Fuentes", 5), ("Escobar", 4), ("Galván", 4), ("Villegas", 4), ("Beltrán", 4), ("Ordóñez", 3),
    ("Montes de Oca", 2), ("De la Cruz", 6), ("Del Ángel", 2), ("De León", 3), ("De la Rosa", 2),
    ("Canché", 1), ("Pech", 1), ("Chan", 2), ("May", 1), ("Ek", 1), ("Tun", 1), ("Uc", 1), ("Xool", 1),
)  # fmt: skip


def given_parts(given: str) -> list[str]:
    """FHIR ``given`` items of a given name: "José Luis" -> ["José", "Luis"];
    "María de los Ángeles" -> ["María", "de los Ángeles"] (particles stay with the word they precede)."""
    parts: list[str] = []
    pending: list[str] = []
    for word in given.split():
        if word.lower() in ("de", "del", "la", "las", "los", "y"):
            pending.append(word)
            continue
        parts.append(" ".join([*pending, word]))
        pending = []
    if pending:
        parts.append(" ".join(pending))
    return parts
