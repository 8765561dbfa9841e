package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/commucat/commucat/ccp"
	"github.com/commucat/commucat/client"
)

// loadIdentity reads the device identity from a state file, creating it
// on first use.
func loadIdentity(path, deviceID string) (*client.Identity, error) {
	var id client.Identity
	if b, err := os.ReadFile(path); err == nil {
		return &id, json.Unmarshal(b, &id)
	}
	nid, err := client.NewIdentity(deviceID, nil)
	if err != nil {
		return nil, err
	}
	return nid, saveIdentity(path, nid)
}

func saveIdentity(path string, id *client.Identity) error {
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// One connection: dial, join a channel, send a message, read what arrives.
func ExampleDial() {
	id, err := loadIdentity("device.json", "laptop-1")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	conn, err := client.Dial(ctx, client.Options{
		URL:      "https://chat.example.com:8443",
		Identity: id,
		Handle:   "alice", // admission hint for a new device (§4.9)
		PQ:       true,    // ML-KEM-768 hybrid keys on version 2
		OnIdentityUpdate: func(id *client.Identity) {
			saveIdentity("device.json", id) // keep the new device certificate
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Println("version", conn.Version(), "session", conn.Session())

	if _, err := conn.Join(ctx, 42, []string{"phone-of-bob"}, ""); err != nil {
		log.Fatal(err)
	}
	if err := conn.SendMessage(ctx, 42, []byte("hello")); err != nil {
		log.Fatal(err) // e.g. *client.ErrorFrame with a Forbidden problem
	}
	for {
		f, err := conn.Recv(ctx)
		if err != nil {
			log.Fatal(err)
		}
		if f.Type == ccp.Msg {
			fmt.Printf("channel %d: %q\n", f.Channel, f.Payload)
			conn.AckDelivery(ctx, f.Channel, f.Sequence) // delivered: drop it from the inbox
		}
	}
}

// A device that stays connected and reacts to events.
func ExampleClient() {
	id, err := loadIdentity("device.json", "laptop-1")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	c := client.New(client.Options{
		URL:       "https://chat.example.com:8443",
		Identity:  id,
		Transport: client.WebSocket,
	})
	go func() {
		if err := c.Run(ctx); err != nil {
			log.Println("giving up:", err) // e.g. Replaced or PairingRequired
		}
	}()
	go func() {
		if err := c.SendMessage(ctx, 42, []byte("hi")); err != nil {
			log.Println(err)
		}
	}()
	for ev := range c.Events() { // closed when Run returns
		switch ev := ev.(type) {
		case *client.Connected:
			fmt.Println("connected, version", ev.Version)
		case *client.Message:
			fmt.Printf("%v on %d from %q: %d bytes\n", ev.Type, ev.Channel, ev.Sender, len(ev.Payload))
		case *client.Presence:
			fmt.Println(ev.Entity, "is", ev.State)
		case *client.ServerError:
			fmt.Println("server:", ev.Problem.Title)
		case *client.Disconnected:
			fmt.Println("disconnected:", ev.Err, "retry in", ev.RetryIn)
		}
	}
}
