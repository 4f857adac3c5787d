/* test_row_store.c: placeholder, being written */
int main(void) {
    return 77;
}
