package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pairdb/pairdb/client"
)

// Example writes a value, reads it with its context and replaces it. It
// talks to the NATS server in NATS_URL, else to `pairdb dev` on 4222.
func Example() {
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL // nats://127.0.0.1:4222
	}
	nc, err := nats.Connect(url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc, client.WithTenant("default"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Every write carries an idempotency key (a fresh one unless you give
	// one), reused on the client's own retries.
	if _, err := c.Put(ctx, "example-cart", []byte("apple")); err != nil {
		log.Fatal(err)
	}
	got, err := c.Get(ctx, "example-cart") // Found, Siblings, Context (pass it back to write over what you read)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (%d value)\n", got.GetValue(), len(got.GetSiblings()))

	// With the read's context, the write replaces every value the read saw;
	// without one it would be concurrent with them (a sibling).
	_, err = c.Put(ctx, "example-cart", []byte("apple+pear"), client.WithContext(got.GetContext()))
	if err != nil {
		log.Fatal(err)
	}
	got, err = c.Get(ctx, "example-cart")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (%d value)\n", got.GetValue(), len(got.GetSiblings()))
	// Output:
	// apple (1 value)
	// apple+pear (1 value)
}
